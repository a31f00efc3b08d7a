# ctest driver for one fuzz target: copies the seed corpus to a scratch folder in the build
# tree, runs the fuzzer for SECONDS over both, and fails when it finds a crash (libFuzzer's
# exit status is then non-zero; the crashing input is left in the scratch folder's parent).
foreach(var FUZZER SEEDS SCRATCH SECONDS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_fuzzer.cmake: ${var} is not set")
  endif()
endforeach()
file(REMOVE_RECURSE ${SCRATCH})
file(MAKE_DIRECTORY ${SCRATCH})
file(GLOB seeds ${SEEDS}/*)
if(seeds)
  file(COPY ${seeds} DESTINATION ${SCRATCH})
endif()
get_filename_component(artifacts ${SCRATCH} DIRECTORY)
execute_process(
  COMMAND ${FUZZER} -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048
          -artifact_prefix=${artifacts}/ -print_final_stats=1 ${SCRATCH} ${SEEDS}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${FUZZER} exited with ${rc}: see the crash-* / timeout-* / oom-* "
                      "input in ${artifacts}")
endif()
