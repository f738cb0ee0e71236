#pragma once
// The notebook's three Conv2D layers (3x3, same padding), as the benchmarks
// index them: layer 0 = 28x28x1 -> 75, 1 = 14x14x75 -> 50, 2 = 7x7x50 -> 25.
#include <loom/tensor.hpp>

namespace loom::bench {

struct ConvShape {
  Index h, w, cin, cout;
};
inline constexpr ConvShape kShapes[] = {{28, 28, 1, 75}, {14, 14, 75, 50}, {7, 7, 50, 25}};

}  // namespace loom::bench
