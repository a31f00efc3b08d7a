# ctest driver: builds tests/consumer/project against ipckit and runs it.
# -DMODE=install|subdir -DSRC=<ipckit source> -DBIN=<ipckit build> -DWORK=<scratch dir>
# -DEXPECT_MPI=ON|OFF (the build has ipckit::mpi)
file(REMOVE_RECURSE ${WORK})
set(gen -G Ninja)
if(MODE STREQUAL "install")
  # The library's component only: the examples need not be built for it.
  set(prefix ${WORK}/prefix)
  execute_process(COMMAND ${CMAKE_COMMAND} --install ${BIN} --prefix ${prefix}
                          --component ipckit
                  RESULT_VARIABLE rc)
  if(rc)
    message(FATAL_ERROR "cmake --install failed")
  endif()
  # Only public headers are installed: none of lib/<layer>/<name>.hpp, at
  # ipckit/<layer>/<name>.hpp or ipckit/<layer>/detail/<name>.hpp. And the main targets file
  # names neither Boost nor MPI (those are in the component files, loaded on request).
  file(GLOB_RECURSE lib_headers RELATIVE ${SRC}/lib ${SRC}/lib/*.hpp)
  foreach(header IN LISTS lib_headers)
    get_filename_component(layer ${header} DIRECTORY)
    get_filename_component(name ${header} NAME)
    foreach(installed ipckit/${layer}/${name} ipckit/${layer}/detail/${name})
      if(EXISTS ${prefix}/include/${installed})
        message(FATAL_ERROR "lib/${header} is installed as include/${installed}")
      endif()
    endforeach()
  endforeach()
  file(GLOB main_targets ${prefix}/lib*/cmake/ipckit/ipckitTargets.cmake)
  if(NOT main_targets)
    message(FATAL_ERROR "no ipckitTargets.cmake under ${prefix}")
  endif()
  file(READ ${main_targets} text)
  if(text MATCHES "Boost|(^|[^A-Z])MPI")  # not COMPILE_FEATURES
    message(FATAL_ERROR "${main_targets} names Boost or MPI")
  endif()
  # Release: GCC's -O2/-O3 warnings (-Wmaybe-uninitialized) in the installed headers show
  # only in an optimised build.
  set(args -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release)
else()
  # The whole library is compiled again here: unoptimised, which halves the time (the
  # optimised warnings are the install mode's business), through ccache when there is one.
  set(args -DIPCKIT_SOURCE_DIR=${SRC} -DCMAKE_BUILD_TYPE=Debug)
  find_program(ccache ccache)
  if(ccache)
    list(APPEND args -DCMAKE_CXX_COMPILER_LAUNCHER=${ccache})
  endif()
endif()
execute_process(COMMAND ${CMAKE_COMMAND} ${gen} -S ${SRC}/tests/consumer/project -B ${WORK}/build
                        -DEXPECT_MPI=${EXPECT_MPI} ${args}
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configuring the consumer failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK}/build RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building the consumer failed")
endif()
foreach(program consumer consumer_lockfree consumer_containers)
  execute_process(COMMAND ${WORK}/build/${program} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  TIMEOUT 120)
  message(STATUS "${out}")
  if(rc OR NOT out MATCHES "${program} ok")
    message(FATAL_ERROR "${program} failed to run")
  endif()
endforeach()
