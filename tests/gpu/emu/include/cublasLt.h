// Emulated CUDA for the CPU build of the GPU op test (tests/gpu/emu/).
#include "cuda_emu.h"
