# ctest fluid.same_field_on_mpi: the field after 200 steps is byte-identical on one forked
# process (ShmComm) and on 4 MPI ranks (MpiComm). Arguments: -DEXE= -DMPIEXEC= -DOUT=
file(REMOVE_RECURSE "${OUT}")
set(common --case cavity --re 100 --nx 40 --ny 30 --steps 200)
execute_process(COMMAND "${EXE}" ${common} --procs 1 --out "${OUT}/shm" RESULT_VARIABLE rc1)
execute_process(COMMAND "${MPIEXEC}" -np 4 --oversubscribe --mca btl self,vader "${EXE}"
                        ${common} --comm mpi --out "${OUT}/mpi" RESULT_VARIABLE rc2)
if(NOT rc1 EQUAL 0 OR NOT rc2 EQUAL 0)
  message(FATAL_ERROR "runs failed: shm ${rc1}, mpi ${rc2}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files "${OUT}/shm/flow.vti" "${OUT}/mpi/flow.vti"
                RESULT_VARIABLE same)
if(NOT same EQUAL 0)
  message(FATAL_ERROR "the fields differ between ShmComm (1 cell) and MpiComm (4 ranks)")
endif()
