// Reading a rank's bytes of a shard unit straight from the safetensors files: pread of the tensors' byte ranges
// that overlap the requested unit bytes (never a whole file, never touching the mapped pages), converted to the
// unit's element types.
#ifndef OT_TRAINER_SHARD_READ_H
#define OT_TRAINER_SHARD_READ_H

#include "formats/checkpoint.h"
#include "trainer/model/shard_layout.h"

// Fills dst with bytes [begin, end) of unit u: tensor bytes converted (BF16/F16/F32 → the entry's dtype, rounding
// to bf16 as the CUDA upload does; dequantized experts transposed), alignment gaps and bytes past the unit's end
// zero. begin and end must be multiples of 4 (every piece is). *bytes_read (may be NULL) gets the file bytes read.
// -1 with a message naming the file and tensor.
int ot_shard_read(const ot_shard_unit *u, const ot_checkpoint *ck, size_t begin, size_t end, void *dst,
                  size_t *bytes_read, ot_err *err);

#endif
