#!/usr/bin/env python3
"""Rewrite kernels/cuda sources so a host C++ compiler can build them against the CUDA emulation (cuda_emu.h):
kernel launches `k<<<grid, block, shmem, stream>>>(args)` become `emu_launch(k, grid, block, shmem, stream, args)`,
each inline assembly statement the emulator knows (by its opcode, see ASM) becomes a call to its emulation (the
mma.sync and ldmatrix warp collectives, cp.async copies and their groups, the wgmma products and their wait; the
fences become empty statements), dynamic shared memory becomes the
emulator's buffer, and every static shared array is registered so the emulator poisons it before each block. The
replacement calls name the parameters of the wrapper function around each asm statement (cuda_common.cuh,
moe_mxfp4_gemm.cu), so a wrapper must use those names; any other inline assembly is refused.

Usage: transform.py SRC_DIR DST_DIR   (copies every file of SRC_DIR, rewritten, into DST_DIR)"""
import os
import re
import sys


def register_shared(m):
    decl = m.group(0)
    body = re.sub(r'__align__\(\d+\)', '', decl[len('__shared__'):]).strip().rstrip(';')
    names = re.findall(r'(\w+)\s*(?:\[[^\]]*\])*\s*(?:,|$)', body)
    return decl + ' ' + ' '.join('emu_shared(&%s, sizeof(%s));' % (n, n) for n in names)


# (opcode prefix of the asm string, replacement); checked in order, so the longer prefixes come first.
ASM = [
    ('mma.sync', 'emu_mma_bf16_16816(d, a, b0, b1);'),
    ('ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16', 'emu_ldmatrix_x4(r, p, 1);'),
    ('ldmatrix.sync.aligned.m8n8.x4.shared.b16', 'emu_ldmatrix_x4(r, p, 0);'),
    ('cp.async.cg.shared.global [%0], [%1], 16;', 'emu_cp_async(dst, src, 16);'),
    ('cp.async.ca.shared.global [%0], [%1], 16;', 'emu_cp_async(dst, src, 16);'),
    ('cp.async.ca.shared.global [%0], [%1], 8;', 'emu_cp_async(dst, src, 8);'),
    ('cp.async.ca.shared.global [%0], [%1], 4;', 'emu_cp_async(dst, src, 4);'),
    ('cp.async.commit_group;', 'emu_cp_async_commit();'),
    ('cp.async.wait_group %0;', 'emu_cp_async_wait(N);'),
    ('{.reg .pred p; setp.ne.b32 p, %66, 0; wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16',
     'emu_wgmma_m64n128k16(d, desc_a, desc_b, TRANS_B);'),
    ('wgmma.wait_group.sync.aligned %0;', 'emu_wgmma_wait(N);'),
    ('wgmma.fence.sync.aligned;', ';'),          # register ordering: the emulation computes at issue
    ('wgmma.commit_group.sync.aligned;', 'emu_wgmma_commit();'),
    ('fence.proxy.async.shared::cta;', ';'),     # one memory for every proxy here
]


def rewrite_asm(m):
    text = m.group(1)
    for opcode, call in ASM:
        if text.startswith(opcode):
            return call
    raise SystemExit('transform.py: inline assembly the emulator does not know: ' + text[:60])


def rewrite(s):
    s = re.sub(r'asm volatile\("([^"]*)".*?\);', rewrite_asm, s, flags=re.S)
    if re.search(r'\basm\s*(volatile\s*)?\(', s):
        raise SystemExit('transform.py: inline assembly the emulator does not know')
    s = re.sub(r'extern __shared__ (?:__align__\(\d+\) )?(\w+) (\w+)\[\];', r'\1 *\2 = (\1 *)emu_dyn_smem();', s)
    s = re.sub(r'(\w+(?:<[^;<>()]*>)?)\s*<<<(.*?)>>>\s*\(', r'emu_launch(\1, \2, ', s, flags=re.S)
    s = re.sub(r'__shared__ (?:__align__\(\d+\) )?[^;(]*;', register_shared, s)
    return s


def main():
    src, dst = sys.argv[1], sys.argv[2]
    os.makedirs(dst, exist_ok=True)
    for name in sorted(os.listdir(src)):
        with open(os.path.join(src, name)) as f:
            text = f.read()
        with open(os.path.join(dst, name), 'w') as f:
            f.write(rewrite(text))


if __name__ == '__main__':
    main()
