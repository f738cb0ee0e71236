#!/usr/bin/env bash
# bench/reference/cpuid_avx2.c, the CPUID cap bench/compare-peers --isa avx2
# preloads under ONNX Runtime and OpenVINO: checked against the CPU itself.
# Without the library a program's CPUID reports AVX-512 as /proc/cpuinfo
# does; with it, on the main thread and on a thread started later, leaf 7
# reports no AVX-512 (and no AVX-VNNI) while AVX2 and FMA stay; the library
# says it is on and counts the CPUIDs it answered; a real segmentation fault
# still kills the program. Skipped (77) where the kernel cannot fault CPUID.
#
#   tests/cpuid_avx2_cap.sh SOURCE_DIR
set -euo pipefail
src="${1:?usage: cpuid_avx2_cap.sh SOURCE_DIR}"
grep -qw cpuid_fault /proc/cpuinfo || { echo "skipped: this kernel or CPU has no CPUID faulting"; exit 77; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cc -O2 -Wall -Wextra -Werror -shared -fPIC -o "$work/cpuid_avx2.so" "$src/bench/reference/cpuid_avx2.c"
cat >"$work/check.c" <<'C'
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
static void report(const char* who) {
  unsigned a, b, c, d, a1, b1, c1, d1;
  __cpuid_count(7, 0, a, b, c, d);
  __cpuid_count(7, 1, a1, b1, c1, d1);
  unsigned f, g, h, k;
  __cpuid(1, f, g, h, k);
  printf("%s avx512f=%u avx512bw=%u avx512vnni=%u avx512bf16=%u avxvnni=%u avx2=%u fma=%u\n", who, (b >> 16) & 1,
         (b >> 30) & 1, (c >> 11) & 1, (a1 >> 5) & 1, (a1 >> 4) & 1, (b >> 5) & 1, (h >> 12) & 1);
}
static void* thread(void* arg) { report("thread"); return arg; }
int main(int argc, char** argv) {
  report("main");
  pthread_t t;
  pthread_create(&t, NULL, thread, NULL);
  pthread_join(t, NULL);
  int (*status)(long*) = (int (*)(long*))dlsym(RTLD_DEFAULT, "cpuid_avx2_status");
  long count = 0;
  const int on = status ? status(&count) : -1;
  printf("status %d count %ld\n", on, count);
  fflush(stdout);
  if (argc > 1) *(volatile int*)(argv[1] - (long)argv[1]) = 1;  /* a real fault: address 0 */
  return 0;
}
C
cc -O2 -o "$work/check" "$work/check.c" -lpthread -ldl
fail() { echo "FAILED: $*"; exit 1; }
native="$("$work/check")"
capped="$(LD_PRELOAD="$work/cpuid_avx2.so" "$work/check")"
echo "without the library:"; echo "$native"
echo "with it:"; echo "$capped"
has() { grep -qw "$1" /proc/cpuinfo && echo 1 || echo 0; }
grep -q "^main avx512f=$(has avx512f) .*avx2=1 fma=1" <<<"$native" || fail "CPUID without the library disagrees with /proc/cpuinfo"
grep -q "status -1" <<<"$native" || fail "the library's status is there without the library"
for who in main thread; do
  grep -q "^$who avx512f=0 avx512bw=0 avx512vnni=0 avx512bf16=0 avxvnni=0 avx2=1 fma=1$" <<<"$capped" ||
    fail "$who: the capped CPUID still reports AVX-512 or AVX-VNNI, or lost AVX2/FMA"
done
grep -Eq "^status 1 count [1-9]" <<<"$capped" || fail "the library does not say it is on, or answered no CPUID"
set +e
LD_PRELOAD="$work/cpuid_avx2.so" "$work/check" crash >/dev/null 2>&1
code=$?
set -e
[ "$code" -eq 139 ] || fail "a real segmentation fault under the library ended with exit $code, not 139 (SIGSEGV)"
echo "the cap holds on both threads; a real fault still kills the program"
