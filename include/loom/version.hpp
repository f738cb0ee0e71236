#pragma once
/// \file version.hpp
/// loom's version, kept equal to the project version in CMakeLists.txt.

#define LOOM_VERSION_MAJOR 0
#define LOOM_VERSION_MINOR 1
#define LOOM_VERSION_PATCH 0

namespace loom {
inline constexpr const char* version = "0.1.0";
}  // namespace loom
