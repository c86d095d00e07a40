# FSDP sharding of the base weights (trainer/model/shard_layout.c, shard_read.c, model_shard.c).
# The shard plan and the shard reader on the golden model (awkward sizes, MXFP4 experts) and on a tiny model with
# dequantized (transposed) experts and a tied output head, for world sizes 1-5 and 7.
add_executable(test_shard_layout ${CMAKE_CURRENT_SOURCE_DIR}/test_shard_layout.c ${CMAKE_CURRENT_SOURCE_DIR}/test_util.c)
target_link_libraries(test_shard_layout PRIVATE ot_model)
add_test(NAME test_shard_layout
         COMMAND bash -c "set -e; d=${CMAKE_BINARY_DIR}/shard_layout; rm -rf $d; mkdir -p $d; \
${OT_BIN}/osstune-init-model --preset tiny --seed 3 --out $d/dense --dense-experts --set num_hidden_layers=2 \
--set vocab_size=1000 --set pad_token_id=0 --set eos_token_id=1 --set bos_token_id=2 \
--set tie_word_embeddings=true >/dev/null; \
$<TARGET_FILE:test_shard_layout> tests/fixtures/golden/model $d/dense"
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(test_shard_layout PROPERTIES TIMEOUT 120)

# osstune-train with the base weights sharded over 1-4 ranks against one unsharded rank, byte for byte
# (world sizes 3 and 4 do not divide the units); the per-rank base-weight bytes; a killed rank ends the job.
add_test(NAME test_train_shard
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_train_shard.sh ${OT_BIN} ${CMAKE_BINARY_DIR}/train_runs/shard
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(test_train_shard PROPERTIES TIMEOUT 300
                     ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
