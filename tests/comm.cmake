# The communicator (comm/): collectives with 1 to 4 ranks under mpirun, the ordered sums, and the failure paths
# (a killed rank, a frozen rank). CI runs as root on two cores, hence the Open MPI root variables and
# --oversubscribe.
if(TARGET ot_comm)
  set(OT_COMM_TEST_ENV OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)

  # Alone (an MPI singleton), then under mpirun with 1, 2, 3 and 4 ranks; the argument is the expected size.
  ot_add_c_test(NAME test_comm_collectives SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/test_comm_collectives.c LIB ot_comm
                ARGS 1)
  target_link_libraries(test_comm_collectives PRIVATE ot_kernels) # the ordered sum's rule: ot_sum_slots_ordered
  set_tests_properties(test_comm_collectives PROPERTIES ENVIRONMENT "${OT_COMM_TEST_ENV}" TIMEOUT 60)
  foreach(n 1 2 3 4)
    add_test(NAME test_comm_collectives_np${n}
             COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${n} --oversubscribe ${MPIEXEC_PREFLAGS}
                     $<TARGET_FILE:test_comm_collectives> ${MPIEXEC_POSTFLAGS} ${n}
             WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(test_comm_collectives_np${n} PROPERTIES ENVIRONMENT "${OT_COMM_TEST_ENV}" TIMEOUT 60
                         PROCESSORS ${n})
  endforeach()

  # Failure paths: one of 3 ranks is killed (SIGKILL) or frozen (SIGSTOP) in the middle of collectives.
  add_executable(test_comm_worker ${CMAKE_CURRENT_SOURCE_DIR}/test_comm_worker.c)
  target_link_libraries(test_comm_worker PRIVATE ot_comm)
  foreach(mode kill kill-left stop)
    add_test(NAME test_comm_fault_${mode}
             COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/comm_fault.sh ${mode} ${MPIEXEC_EXECUTABLE}
                     $<TARGET_FILE:test_comm_worker> 3
             WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(test_comm_fault_${mode} PROPERTIES ENVIRONMENT "${OT_COMM_TEST_ENV}" TIMEOUT 90
                         PROCESSORS 3)
  endforeach()
endif()
