# The CPU reference against transformers + peft (fixtures committed under tests/fixtures/golden).
ot_add_c_test(NAME test_golden SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/test_golden.c LIB ot_train
              ARGS tests/fixtures/golden ${CMAKE_BINARY_DIR}/test_golden_out)
target_link_libraries(test_golden PRIVATE PkgConfig::JANSSON)

# osstune-train end to end under mpirun (CPU backend): N ranks = 1 rank byte for byte, SIGTERM + resume, 3 → 2
# ranks, SIGKILL during a checkpoint write, a damaged newest checkpoint.
foreach(case ranks sigterm reshard sigkill corrupt)
  add_test(NAME test_train_${case}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_train_runs.sh ${OT_BIN} ${CMAKE_BINARY_DIR}/train_runs/${case} ${case}
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(test_train_${case} PROPERTIES TIMEOUT 300
                       ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
endforeach()

# osstune-logits against transformers + peft on a trained tiny model's adapter (skipped without torch/peft).
add_test(NAME test_logits_vs_transformers
         COMMAND bash -c "set -e; d=${CMAKE_BINARY_DIR}/train_runs/ranks; test -d $d/ref1 || exit 77; \
python3 ${CMAKE_CURRENT_SOURCE_DIR}/check_against_transformers.py ${OT_BIN}/osstune-logits $d/model $d/ref1/ckpt/$(cat $d/ref1/ckpt/latest)"
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(test_logits_vs_transformers PROPERTIES SKIP_RETURN_CODE 77 DEPENDS test_train_ranks TIMEOUT 300)

# A randomized campaign of SIGTERM / SIGKILL during training (anywhere, and inside checkpoint writes), each run
# continued to the end and compared with an uninterrupted one, byte for byte. CI runs 3 iterations; more with
# OSSTUNE_SIGNAL_ITERATIONS=N (a failure prints the seed; OSSTUNE_SIGNAL_SEED=S replays it).
add_test(NAME test_train_signals
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_train_signals.sh ${OT_BIN} ${CMAKE_BINARY_DIR}/train_runs/signals
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(test_train_signals PROPERTIES TIMEOUT 300
                     ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
