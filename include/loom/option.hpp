#pragma once
/// \file option.hpp
/// LOOM_OPTION, the macro behind the Keras-style options classes of layers,
/// optimizers, callbacks and fit (`Conv2DOptions(75, {3, 3}).padding(...)`).

#include <utility>

/// Declares a Keras-style option with a chained setter and a getter:
/// `Conv2DOptions(75, {3, 3}).padding(Padding::Same)`.
#define LOOM_OPTION(Type, name_, default_value)      \
 public:                                            \
  auto& name_(Type value) {                         \
    name_##_ = std::move(value);                    \
    return *this;                                   \
  }                                                 \
  const auto& name_() const { return name_##_; }    \
                                                    \
 private:                                           \
  Type name_##_ = default_value;
