# Multi-node launches on one machine (CPU backend): two network namespaces joined by a veth pair stand for two nodes
# (tests/launch/netns_cluster.sh), each with its own address and host name. Both need root; each exits 77 (skipped)
# with the reason when namespaces cannot be made or, for the second, Slurm cannot run.
# launch/osstune-mpirun.sh over a hostfile of both nodes, mpirun reaching node2 through tests/launch/netns_ssh.sh
# (in place of ssh): 4 ranks end with the 1-rank state; node2's ranks killed end the job with a message naming them,
# and the run resumes. About 35 s on 2 cores.
add_test(NAME test_launch_netns_mpirun
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/launch/run_netns_mpirun_test.sh ${OT_BIN}
                 ${CMAKE_BINARY_DIR}/launch_netns_mpirun
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(test_launch_netns_mpirun PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300 LABELS launch)

# launch/osstune.slurm on a two-node Slurm cluster (one slurmd per namespace): 2 nodes x 2 ranks with srun and with
# mpirun end with the 1-rank state; node2's ranks killed end the job FAILED within 60 s, and it resumes. About 2.5
# minutes on 2 cores once Slurm is installed (tests/slurm/run_slurm_test.sh installs it the same way).
add_test(NAME test_launch_netns_slurm
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/launch/run_netns_slurm_test.sh ${OT_BIN}
                 ${CMAKE_BINARY_DIR}/launch_netns_slurm
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(test_launch_netns_slurm PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 900 LABELS "slurm;launch")
