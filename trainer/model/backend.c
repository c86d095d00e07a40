#include "trainer/model/backend.h"

#include <string.h>

#ifdef OT_HAVE_CUDA
#include "trainer/model/model_cuda.h"
#endif

// GPUs this process can drive: 0 without CUDA in the build, or without a device or driver.
static int visible_gpus(void) {
#ifdef OT_HAVE_CUDA
    return ot_cuda_device_count();
#else
    return 0;
#endif
}

int ot_backend_resolve(const char *name, ot_backend *out, ot_err *err) {
    if (!name || !strcmp(name, "auto")) {
        *out = visible_gpus() > 0 ? OT_BACKEND_CUDA : OT_BACKEND_CPU;
        return 0;
    }
    if (!strcmp(name, "cpu")) {
        *out = OT_BACKEND_CPU;
        return 0;
    }
    if (strcmp(name, "cuda")) return ot_fail(err, "--backend: unknown backend '%s' (auto, cpu or cuda)", name);
#ifndef OT_HAVE_CUDA
    return ot_fail(err, "--backend cuda: this build has no CUDA backend (nvcc was not found when it was built); use "
                   "--backend cpu");
#else
    if (visible_gpus() < 1) return ot_fail(err, "--backend cuda: no CUDA device is visible to this process; use --backend cpu");
    *out = OT_BACKEND_CUDA;
    return 0;
#endif
}

const char *ot_backend_name(ot_backend b) { return b == OT_BACKEND_CUDA ? "cuda" : "cpu"; }
