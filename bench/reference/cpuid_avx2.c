/* cpuid_avx2.c: an LD_PRELOAD library that makes a process see an AVX2 CPU.
 *
 * For the peers whose kernels choose their instruction set from CPUID with no
 * switch of their own (ONNX Runtime's MLAS, and the MLAS GEMM inside
 * OpenVINO's CPU plugin): bench/compare-peers --isa avx2 preloads this so
 * that they run their AVX2/FMA kernels, as they would on an AVX2-only CPU.
 *
 * How: Linux's CPUID faulting (arch_prctl(ARCH_SET_CPUID, 0), the x86
 * "cpuid_fault" feature) makes every CPUID instruction of the process raise
 * SIGSEGV. The handler runs the real CPUID, clears the AVX-512 and AVX-VNNI
 * family bits of leaf 7 (what an AVX2-only Zen 3 reports as absent), writes
 * the answer into the interrupted registers and steps over the instruction.
 * A SIGSEGV that is not a CPUID goes to the handler that was there before.
 * The setting is per thread and inherited by threads created later, and
 * execve resets it; the constructor runs before the program starts threads.
 *
 * What it does not reach: glibc picks its string functions before this
 * loads (as it does for loom's AVX2 build, which uses the same glibc), and
 * XGETBV, which reports the OS-enabled register state, is not trapped; code
 * that requires both the CPUID bit and XCR0 (MLAS, oneDNN) sees no AVX-512.
 *
 * cpuid_avx2_status() tells the process whether the cap is on (1), or why
 * not (0: this kernel or CPU has no CPUID faulting) and how many CPUIDs it
 * answered: bench/peers_notebook.py reads it with ctypes.
 *
 *   cc -O2 -shared -fPIC -o cpuid_avx2.so bench/reference/cpuid_avx2.c
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef ARCH_SET_CPUID
#define ARCH_SET_CPUID 0x1012
#endif

static struct sigaction previous;
static int active;
static long answered;

static long set_cpuid_faulting(int faulting) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, faulting ? 0 : 1); }

/* Leaf 7's feature bits that an AVX2-only CPU does not have. */
static void mask(uint32_t leaf, uint32_t subleaf, uint32_t regs[4]) {
  if (leaf != 7) return;
  if (subleaf == 0) {
    /* EBX: AVX512F 16, DQ 17, IFMA 21, PF 26, ER 27, CD 28, BW 30, VL 31 */
    regs[1] &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) |
                 (1u << 31));
    /* ECX: VBMI 1, VBMI2 6, VNNI 11, BITALG 12, VPOPCNTDQ 14 */
    regs[2] &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
    /* EDX: 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, AMX-BF16 22, AVX512-FP16 23, AMX-TILE 24, AMX-INT8 25 */
    regs[3] &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25));
  } else if (subleaf == 1) {
    /* EAX: AVX-VNNI 4, AVX512-BF16 5, AVX-IFMA 23 */
    regs[0] &= ~((1u << 4) | (1u << 5) | (1u << 23));
    /* EDX: AVX-VNNI-INT8 4, AVX-NE-CONVERT 5, AVX10 19 */
    regs[3] &= ~((1u << 4) | (1u << 5) | (1u << 19));
  }
}

static void on_segv(int sig, siginfo_t *info, void *context) {
  ucontext_t *uc = (ucontext_t *)context;
  greg_t *r = uc->uc_mcontext.gregs;
  const unsigned char *ip = (const unsigned char *)r[REG_RIP];
  /* A CPUID fault is a #GP, delivered with si_code SI_KERNEL; anything else is a real fault. */
  if (info->si_code != SI_KERNEL || ip[0] != 0x0f || ip[1] != 0xa2) {
    sigaction(SIGSEGV, &previous, NULL); /* the instruction runs again and faults to the old handler */
    (void)sig;
    return;
  }
  uint32_t leaf = (uint32_t)r[REG_RAX], subleaf = (uint32_t)r[REG_RCX], regs[4];
  set_cpuid_faulting(0);
  __cpuid_count(leaf, subleaf, regs[0], regs[1], regs[2], regs[3]);
  set_cpuid_faulting(1);
  mask(leaf, subleaf, regs);
  r[REG_RAX] = regs[0];
  r[REG_RBX] = regs[1];
  r[REG_RCX] = regs[2];
  r[REG_RDX] = regs[3];
  r[REG_RIP] += 2;
  __atomic_add_fetch(&answered, 1, __ATOMIC_RELAXED);
}

__attribute__((constructor)) static void start(void) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = on_segv;
  action.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&action.sa_mask);
  if (sigaction(SIGSEGV, &action, &previous) != 0) return;
  if (set_cpuid_faulting(1) != 0) {
    sigaction(SIGSEGV, &previous, NULL);
    return;
  }
  active = 1;
}

/* 1 when CPUID is capped, 0 when this machine cannot fault CPUID; *count: the CPUIDs answered so far. */
int cpuid_avx2_status(long *count) {
  if (count) *count = __atomic_load_n(&answered, __ATOMIC_RELAXED);
  return active;
}
