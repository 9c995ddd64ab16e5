# Finds keel's dependencies. Used by the build and, installed, by keelConfig.cmake so that
# find_package(keel) brings the same imported targets.
include(CMakeFindDependencyMacro)
find_dependency(absl)
find_dependency(spdlog)
find_dependency(CURL)
find_dependency(ZLIB)
find_dependency(Threads)
find_package(PkgConfig REQUIRED)
if(NOT TARGET keel_deps::urcu_memb)
  pkg_check_modules(KEEL_URCU_MEMB REQUIRED IMPORTED_TARGET GLOBAL liburcu-memb)
  add_library(keel_deps::urcu_memb ALIAS PkgConfig::KEEL_URCU_MEMB)
endif()
