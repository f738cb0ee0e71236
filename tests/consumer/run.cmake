# Builds and runs tests/consumer against loom in one MODE:
#   install       cmake --install loom's build tree into a prefix, then find_package(loom)
#   subdirectory  add_subdirectory(<loom source>)
#   fetchcontent  FetchContent from the local source tree
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

function(run)
  execute_process(COMMAND ${ARGN} WORKING_DIRECTORY ${WORK_DIR} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}")
  endif()
  message(STATUS "${out}")
endfunction()

# No build type, so no optimization: the compile takes half the time of a
# Release one, and what this test checks (that loom is found, compiles, links
# and runs) does not depend on it. loom's own tests and programs build as Release.
set(args -S ${CONSUMER_DIR} -B ${WORK_DIR}/build -DLOOM_MODE=${MODE} -DCMAKE_BUILD_TYPE=)
if(MODE STREQUAL "install")
  run(${CMAKE_COMMAND} --install ${LOOM_BINARY_DIR} --prefix ${WORK_DIR}/prefix)
  list(APPEND args -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
else()
  list(APPEND args -DLOOM_SOURCE_DIR=${LOOM_SOURCE_DIR})
endif()
run(${CMAKE_COMMAND} ${args})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build --parallel 2)
run(${WORK_DIR}/build/consumer)
if(EXISTS ${WORK_DIR}/build/consumer_keras)
  run(${WORK_DIR}/build/consumer_keras)
endif()
if(EXISTS ${WORK_DIR}/build/consumer_mpi)
  run(${WORK_DIR}/build/consumer_mpi)
endif()
