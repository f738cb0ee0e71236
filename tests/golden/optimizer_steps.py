#!/usr/bin/env python3
"""Golden values for tests/test_training.cpp: two steps of RMSprop and Adam
(Keras 2 update rules and defaults) on w = [1, -2] with gradients
g1 = [0.5, -1] then g2 = [0.1, 0.2]. Plain Python floats, no framework."""
import math

w, g1, g2 = [1.0, -2.0], [0.5, -1.0], [0.1, 0.2]

a, ww = [0.0, 0.0], w[:]
for g in (g1, g2):
    a = [0.9 * ai + 0.1 * gi * gi for ai, gi in zip(a, g)]
    ww = [wi - 1e-3 * gi / (math.sqrt(ai) + 1e-7) for wi, gi, ai in zip(ww, g, a)]
    print("rmsprop", ["%.12f" % x for x in ww])

m, v, ww = [0.0, 0.0], [0.0, 0.0], w[:]
for t, g in enumerate((g1, g2), 1):
    m = [0.9 * mi + 0.1 * gi for mi, gi in zip(m, g)]
    v = [0.999 * vi + 0.001 * gi * gi for vi, gi in zip(v, g)]
    lr = 1e-3 * math.sqrt(1 - 0.999**t) / (1 - 0.9**t)
    ww = [wi - lr * mi / (math.sqrt(vi) + 1e-7) for wi, mi, vi in zip(ww, m, v)]
    print("adam", ["%.12f" % x for x in ww])
