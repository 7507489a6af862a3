"""libkbpack's dense kernels (runtimes/c/kernels.c): every SIMD path this CPU has (AVX2, AVX-512F on
x86-64; NEON on aarch64, under QEMU; WebAssembly SIMD, under Node) returns exactly the portable C code's float, bit for bit, for
int8 and float16 rows of every length from 0 to 100 (a 64-lane step and every tail) and at 384,
over values chosen to stress rounding: int8 -128..127, halves from subnormal to 65504 of both signs,
query weights spanning 2^-30..2^30. "Same result" is equality: each element widens to float exactly,
and a multiply and an add round the same in a vector lane as in a scalar register (no FMA).

And the library uses them: a search of int8 and float16 rows gives the same ids and scores as the
portable build (KBP_PORTABLE_KERNELS) to the last digit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from conftest import LIBKBPACK_SRC, built_once, make_libkbpack, require_or_skip, sources_key

# A program calling the kernels directly: they are hidden from libkbpack.so, not from libkbpack.a.
PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kbpack_internal.h"

static uint64_t state = 0x9e3779b97f4a7c15u;
static uint32_t next(void) { state ^= state << 13; state ^= state >> 7; state ^= state << 17; return (uint32_t)(state >> 11); }

/* a weight across 2^-30..2^30, either sign, or now and then 0 or a power of two */
static float weight(void) {
  uint32_t r = next();
  if (r % 17 == 0) return 0.0f;
  float m = (float)(r % 1000003) / 1000003.0f + 0.5f;
  int e = (int)(next() % 61) - 30;
  float f = m;
  while (e > 0) { f *= 2.0f; e--; }
  while (e < 0) { f *= 0.5f; e++; }
  return next() & 1 ? -f : f;
}

/* a finite half: any exponent (subnormals and 0 included) but 31 (infinity, NaN) */
static uint16_t half(void) {
  uint16_t h;
  do h = (uint16_t)next(); while ((h & 0x7c00u) == 0x7c00u);
  return h;
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 200;
  static const kbpi_kernel kernels[] = {KBPI_KERNEL_AVX2, KBPI_KERNEL_AVX512, KBPI_KERNEL_NEON, KBPI_KERNEL_WASM_SIMD};
  static const char *names[] = {"avx2", "avx512", "neon", "wasm"};
  size_t lengths[104];
  for (size_t i = 0; i <= 100; i++) lengths[i] = i;
  lengths[101] = 384; lengths[102] = 768; lengths[103] = 1023;
  int8_t v[1024]; uint16_t h[1024]; float w[1024];
  long compared = 0, differ = 0;
  for (int k = 0; k < 4; k++) {
    int available = kbpi_kernel_available(kernels[k]);
    printf("%s %s\n", names[k], available ? "available" : "absent");
    if (!available) continue;
    for (int round = 0; round < rounds; round++)
      for (size_t li = 0; li < sizeof lengths / sizeof *lengths; li++) {
        size_t n = lengths[li];
        for (size_t i = 0; i < n; i++) {
          v[i] = round % 5 == 0 ? (int8_t)(next() & 1 ? 127 : -128) : (int8_t)next();
          h[i] = half();
          w[i] = weight();
        }
        float a = kbpi_dot_i8(v, w, n, KBPI_KERNEL_PORTABLE), b = kbpi_dot_i8(v, w, n, kernels[k]);
        float c = kbpi_dot_f16((const uint8_t *)h, w, n, KBPI_KERNEL_PORTABLE), d = kbpi_dot_f16((const uint8_t *)h, w, n, kernels[k]);
        compared += 2;
        if (memcmp(&a, &b, 4) != 0) { differ++; if (differ < 5) printf("DIFF %s int8 n=%zu %.9g %.9g\n", names[k], n, a, b); }
        if (memcmp(&c, &d, 4) != 0) { differ++; if (differ < 5) printf("DIFF %s f16 n=%zu %.9g %.9g\n", names[k], n, c, d); }
      }
  }
  printf("compared %ld differ %ld\n", compared, differ);
  return differ != 0;
}
"""


def compile_program(cc: str, build: Path, out: Path, *extra: str) -> Path:
    src = out.with_suffix(".c")
    src.write_text(PROGRAM)
    zstd_include = [f for f in extra if f.startswith("-I")]
    cmd = [cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{LIBKBPACK_SRC}", *zstd_include, "-o", str(out),
           str(src), str(build / "libkbpack.a"), *[f for f in extra if not f.startswith("-I")], "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


def parse(stdout: str) -> dict:
    lines = dict(line.split(" ", 1) for line in stdout.splitlines())
    return {"kernels": {k: lines[k] == "available" for k in ("avx2", "avx512", "neon", "wasm")},
            "compared": int(lines["compared"].split()[0]), "differ": int(lines["compared"].split()[2])}


def test_every_simd_kernel_here_equals_the_portable_code_bit_for_bit(libkbpack, tmp_path):
    exe = compile_program(libkbpack.cc, libkbpack.build, tmp_path / "kernels", "-lzstd")
    proc = subprocess.run([str(exe), "200"], capture_output=True, text=True, timeout=300)
    result = parse(proc.stdout)
    assert proc.returncode == 0 and result["differ"] == 0, proc.stdout
    assert not result["kernels"]["neon"] and not result["kernels"]["wasm"]
    simd = [k for k, on in result["kernels"].items() if on]
    assert result["compared"] == 2 * 200 * 104 * len(simd)
    cpu = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " avx2" in cpu:  # the kernel the CPU offers is the one tested (and used: see below)
        assert result["kernels"]["avx2"]
    if " avx512f" in cpu:
        assert result["kernels"]["avx512"]


def test_the_neon_kernels_equal_the_portable_code_under_qemu(tmp_path_factory, zstd_source, tmp_path):
    for tool, package in (("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"), ("qemu-aarch64-static", "qemu-user-static")):
        if shutil.which(tool) is None:
            require_or_skip(f"aarch64: no {tool} (apt-get install {package})")

    def build(folder: Path) -> None:
        proc = subprocess.run(["make", "-s", "-C", str(LIBKBPACK_SRC), "aarch64", f"BUILD={folder}",
                               f"ZSTD_SRC={zstd_source}"], capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr
    arm = built_once(tmp_path_factory, f"kbpack-aarch64-{sources_key('aarch64-linux-gnu-gcc')}", build) / "aarch64"
    exe = compile_program("aarch64-linux-gnu-gcc", arm, tmp_path / "kernels", f"-I{zstd_source}", "-static",
                          str(arm / "zstd.o"))
    proc = subprocess.run(["qemu-aarch64-static", str(exe), "30"], capture_output=True, text=True, timeout=300)
    result = parse(proc.stdout)
    assert proc.returncode == 0 and result["differ"] == 0, proc.stdout
    assert result["kernels"] == {"avx2": False, "avx512": False, "neon": True, "wasm": False}
    assert result["compared"] == 2 * 30 * 104


NODE_WASI = """
import { readFileSync } from "node:fs";
import { WASI } from "node:wasi";
const wasi = new WASI({ version: "preview1", args: ["kernels", process.argv[3]] });
const module = await WebAssembly.compile(readFileSync(process.argv[2]));
process.exitCode = wasi.start(await WebAssembly.instantiate(module, wasi.getImportObject()));
"""


def test_the_wasm_simd_kernels_equal_the_portable_code_under_node(zstd_source, tmp_path):
    """The kernels as runtimes/js builds them (clang wasm32-wasi, -msimd128), run by Node's WASI."""
    if shutil.which("node") is None:
        require_or_skip("runtimes/js: no `node` on this machine")
    make_check = subprocess.run(["make", "-s", "-C", str(LIBKBPACK_SRC.parent / "js"), "check"], capture_output=True,
                                text=True)
    if make_check.returncode != 0:
        require_or_skip(make_check.stderr.strip() or "runtimes/js: no wasm32 toolchain")
    wasm_cc = subprocess.run(["make", "-s", "-C", str(LIBKBPACK_SRC.parent / "js"), "print-cc"], capture_output=True,
                             text=True).stdout.strip()
    (tmp_path / "kernels.c").write_text(PROGRAM)
    exe = tmp_path / "kernels.wasm"
    proc = subprocess.run([wasm_cc, "--target=wasm32-wasi", "-msimd128", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror",
                           "-D_WASI_EMULATED_MMAN", f"-I{LIBKBPACK_SRC}", f"-I{zstd_source}", "-o", str(exe),
                           str(tmp_path / "kernels.c"), str(LIBKBPACK_SRC / "kernels.c")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "run.mjs").write_text(NODE_WASI)
    proc = subprocess.run(["node", "--no-warnings", str(tmp_path / "run.mjs"), str(exe), "50"], capture_output=True,
                          text=True, timeout=300)
    result = parse(proc.stdout)
    assert proc.returncode == 0 and result["differ"] == 0, proc.stdout + proc.stderr
    assert result["kernels"] == {"avx2": False, "avx512": False, "neon": False, "wasm": True}
    assert result["compared"] == 2 * 50 * 104


SEARCH = r"""
#include <stdio.h>
#include <stdlib.h>
#include "kbpack.h"
int main(int argc, char **argv) { /* BUNDLE QUERIES.f32 N: each query's top 50 as ID SCORE (%.9g: every float32 bit) */
  kbp_bundle *kb;
  kbp_error err;
  if (argc != 4 || kbp_open(argv[1], &kb, &err) != KBP_OK) return 2;
  size_t dim = kbp_dim(kb), nq = (size_t)atoi(argv[3]), n;
  float *q = malloc(nq * dim * sizeof *q);
  FILE *f = fopen(argv[2], "rb");
  if (!q || !f || fread(q, sizeof *q, nq * dim, f) != nq * dim) return 2;
  kbp_hit hits[50];
  for (size_t i = 0; i < nq; i++) {
    if (kbp_search(kb, q + i * dim, NULL, 50, KBP_MODE_DENSE, hits, &n) != KBP_OK) return 3;
    for (size_t j = 0; j < n; j++) printf("%llu %.9g\n", (unsigned long long)hits[j].id, hits[j].score);
  }
  kbp_close(kb);
  return 0;
}
"""


def test_searches_of_int8_and_float16_rows_equal_the_portable_builds(tmp_path_factory, libkbpack, tmp_path):
    """kbp_search on 3000 x 384 rows stored both ways, the library built with and without the SIMD
    kernels (KBP_PORTABLE_KERNELS): the same top 50 with the same float32 scores, every bit."""
    from dataclasses import replace

    from kbc.format.bundle import write_bundle

    _, portable_build = make_libkbpack(tmp_path_factory, cflags="-std=c99 -O2 -Wall -Wextra -Werror -DKBP_PORTABLE_KERNELS")
    (tmp_path / "search.c").write_text(SEARCH)
    simd = libkbpack.compile(tmp_path / "search.c", tmp_path / "search-simd")
    plain = replace(libkbpack, build=portable_build).compile(tmp_path / "search.c", tmp_path / "search-portable")
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((3000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = tmp_path / "q.f32"
    rng.standard_normal((8, 384)).astype("<f4").tofile(queries)
    chunks = [{"text": f"c{i}"} for i in range(len(vectors))]
    for dtype in ("int8", "float16"):
        bundle = write_bundle(tmp_path / f"{dtype}.kbpack", manifest={}, vectors=vectors, chunks=chunks, dtype=dtype)
        a, b = (subprocess.run([str(exe), str(bundle), str(queries), "8"], capture_output=True, text=True, timeout=60)
                for exe in (simd, plain))
        assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
        assert a.stdout.count("\n") == 8 * 50 and a.stdout == b.stdout, dtype
