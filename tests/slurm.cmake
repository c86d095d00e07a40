# The launch scripts under real launchers (CPU backend, 2 ranks).
# launch/osstune-mpirun.sh: SIGTERM, SIGUSR1, Ctrl-C, SIGTERM to its mpirun, to the ranks, or to all of them at once
# stop the run cleanly with status 75, a double Ctrl-C at once, and the same command resumes to the uninterrupted
# run's adapter. About 80 s (4 minutes on a loaded machine).
add_test(NAME test_launch_mpirun_signals
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/slurm/run_mpirun_signal_test.sh ${OT_BIN}
                 ${CMAKE_BINARY_DIR}/launch_mpirun_signals
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(test_launch_mpirun_signals PROPERTIES TIMEOUT 600 LABELS launch)

# launch/osstune.slurm on a one-node Slurm cluster started by the test (it installs Debian's slurmd, slurmctld,
# slurm-client and munge if missing; needs root, else skipped): `scontrol requeue` with srun and with mpirun, SIGUSR1
# to the batch script with srun and with mpirun, preemption, scancel; each run must end byte-identical to an
# uninterrupted one. About 3.5 minutes.
add_test(NAME test_slurm_requeue
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/slurm/run_slurm_test.sh ${OT_BIN} ${CMAKE_BINARY_DIR}/slurm_test
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(test_slurm_requeue PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 900 LABELS "slurm;launch")
