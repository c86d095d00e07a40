#!/usr/bin/env python3
"""Rewrite kernels/cuda sources so a host C++ compiler can build them against the CUDA emulation (cuda_emu.h):
kernel launches `k<<<grid, block, shmem, stream>>>(args)` become `emu_launch(k, grid, block, shmem, stream, args)`,
the mma.sync inline assembly becomes a call to the emulated warp-wide product, dynamic shared memory becomes the
emulator's buffer, and every static shared array is registered so the emulator poisons it before each block.

Usage: transform.py SRC_DIR DST_DIR   (copies every file of SRC_DIR, rewritten, into DST_DIR)"""
import os
import re
import sys


def register_shared(m):
    decl = m.group(0)
    body = decl[len('__shared__'):].strip().rstrip(';')
    names = re.findall(r'(\w+)\s*(?:\[[^\]]*\])*\s*(?:,|$)', body)
    return decl + ' ' + ' '.join('emu_shared(&%s, sizeof(%s));' % (n, n) for n in names)


def rewrite(s):
    s, n_mma = re.subn(r'asm volatile\("mma\.sync.*?\);', 'emu_mma_bf16_16816(d, a, b0, b1);', s, flags=re.S)
    if 'asm' in s.replace('emu_mma', ''):
        raise SystemExit('transform.py: inline assembly the emulator does not know')
    s = re.sub(r'extern __shared__ (\w+) (\w+)\[\];', r'\1 *\2 = (\1 *)emu_dyn_smem();', s)
    s = re.sub(r'(\w+(?:<[^;<>()]*>)?)\s*<<<(.*?)>>>\s*\(', r'emu_launch(\1, \2, ', s, flags=re.S)
    s = re.sub(r'__shared__ [^;(]*;', register_shared, s)
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
