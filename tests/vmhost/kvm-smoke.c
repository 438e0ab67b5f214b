/* kvm-smoke: prove that /dev/kvm works by running real guest code.
 *
 * Creates a VM with an in-kernel irqchip and 2 MiB of memory, runs
 * real-mode code that does "out %al,(%dx)" to port 0x3f8 and checks the
 * KVM_EXIT_IO, then measures:
 *   - the KVM_RUN -> PIO exit -> KVM_RUN round trip (N_PIO iterations),
 *   - how fast guest code runs (a dec/jnz loop of N_LOOP iterations),
 *     compared with the same loop run natively by this process,
 *   - two vCPUs running concurrently (one thread each).
 *
 * Usage: kvm-smoke [PIO_ITERATIONS [LOOP_ITERATIONS]]
 * Exit status 0 and a final line "kvm-smoke: OK" when everything worked.
 *
 * Built by tests/vmhost/run-with-kvm (gcc -O2 -pthread); no other deps.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE   (2u << 20)
#define PIO_ENTRY  0x1000
#define LOOP_ENTRY 0x2000

static int kvm_fd, vm_fd;
static uint8_t *mem;
static long mmap_size;

static void die(const char *what)
{
    fprintf(stderr, "kvm-smoke: FAIL: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

struct vcpu {
    int id, fd;
    struct kvm_run *run;
    long iterations;
    double seconds;
    int ok;
};

static void vcpu_init(struct vcpu *v, int id, uint64_t rip)
{
    struct kvm_sregs sregs;
    struct kvm_regs regs;
    struct kvm_mp_state mp = {.mp_state = KVM_MP_STATE_RUNNABLE};

    v->id = id;
    v->fd = ioctl(vm_fd, KVM_CREATE_VCPU, id);
    if (v->fd < 0)
        die("KVM_CREATE_VCPU");
    v->run = mmap(NULL, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
    if (v->run == MAP_FAILED)
        die("mmap kvm_run");
    /* With the in-kernel irqchip, APs start in wait-for-SIPI. */
    if (ioctl(v->fd, KVM_SET_MP_STATE, &mp) < 0)
        die("KVM_SET_MP_STATE");
    if (ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0)
        die("KVM_GET_SREGS");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    sregs.ds = sregs.es = sregs.ss = sregs.cs;
    sregs.ds.type = sregs.es.type = sregs.ss.type = 3;
    if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0)
        die("KVM_SET_SREGS");
    memset(&regs, 0, sizeof(regs));
    regs.rip = rip;
    regs.rflags = 2;
    if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0)
        die("KVM_SET_REGS");
}

/* Runs until a PIO exit; returns the port, or -1 on anything else. */
static int run_to_pio(struct vcpu *v, uint8_t *byte)
{
    if (ioctl(v->fd, KVM_RUN, 0) < 0)
        die("KVM_RUN");
    if (v->run->exit_reason != KVM_EXIT_IO) {
        fprintf(stderr, "kvm-smoke: vcpu%d: unexpected exit_reason %u\n", v->id,
                v->run->exit_reason);
        return -1;
    }
    if (v->run->io.direction != KVM_EXIT_IO_OUT || v->run->io.size != 1)
        return -1;
    *byte = *((uint8_t *)v->run + v->run->io.data_offset);
    return v->run->io.port;
}

static void *pio_thread(void *arg)
{
    struct vcpu *v = arg;
    uint8_t b;
    double t0 = now();

    v->ok = 1;
    for (long i = 0; i < v->iterations; i++) {
        if (run_to_pio(v, &b) != 0x3f8 || b != 'K') {
            v->ok = 0;
            break;
        }
    }
    v->seconds = now() - t0;
    return NULL;
}

static void native_loop(uint32_t n)
{
    __asm__ volatile("1: dec %0\n\tjnz 1b" : "+c"(n));
}

int main(int argc, char **argv)
{
    long n_pio = argc > 1 ? atol(argv[1]) : 10000;
    uint32_t n_loop = argc > 2 ? (uint32_t)atol(argv[2]) : 10000000;
    struct kvm_userspace_memory_region region;
    struct vcpu v0, v1, v2;
    uint8_t b;
    int api, port;
    double t0, t_guest, t_native;

    kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm_fd < 0)
        die("open /dev/kvm");
    api = ioctl(kvm_fd, KVM_GET_API_VERSION, 0);
    printf("kvm-smoke: KVM_GET_API_VERSION = %d\n", api);
    if (api != 12) {
        fprintf(stderr, "kvm-smoke: FAIL: API version %d != 12\n", api);
        return 1;
    }
    printf("kvm-smoke: KVM_CAP_NR_VCPUS = %d, KVM_CAP_MAX_VCPUS = %d\n",
           ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS),
           ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS));
    mmap_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (mmap_size <= 0)
        die("KVM_GET_VCPU_MMAP_SIZE");

    vm_fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
    if (vm_fd < 0)
        die("KVM_CREATE_VM");
    if (ioctl(vm_fd, KVM_SET_TSS_ADDR, 0xfffbd000ul) < 0)
        die("KVM_SET_TSS_ADDR");
    if (ioctl(vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
        die("KVM_CREATE_IRQCHIP");

    mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
               -1, 0);
    if (mem == MAP_FAILED)
        die("mmap guest memory");
    region = (struct kvm_userspace_memory_region){
        .slot = 0,
        .guest_phys_addr = 0,
        .memory_size = MEM_SIZE,
        .userspace_addr = (uintptr_t)mem,
    };
    if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        die("KVM_SET_USER_MEMORY_REGION");

    /* 0x1000: mov $0x3f8,%dx; mov $'K',%al; 1: out %al,(%dx); jmp 1b */
    static const uint8_t pio_code[] = {0xba, 0xf8, 0x03, 0xb0, 'K', 0xee, 0xeb, 0xfd};
    memcpy(mem + PIO_ENTRY, pio_code, sizeof(pio_code));
    /* 0x2000: mov $n,%ecx; 1: dec %ecx; jnz 1b; mov $0x3f9,%dx; out %al,(%dx); hlt */
    uint8_t loop_code[] = {0x66, 0xb9, 0,    0,    0,    0,    0x66, 0x49,
                           0x75, 0xfc, 0xba, 0xf9, 0x03, 0xee, 0xf4};
    memcpy(loop_code + 2, &n_loop, 4);
    memcpy(mem + LOOP_ENTRY, loop_code, sizeof(loop_code));

    /* 1. First exit: check it is the expected OUT of 'K' to 0x3f8. */
    vcpu_init(&v0, 0, PIO_ENTRY);
    port = run_to_pio(&v0, &b);
    if (port != 0x3f8 || b != 'K') {
        fprintf(stderr, "kvm-smoke: FAIL: first exit port=%#x byte=%#x\n", port, b);
        return 1;
    }
    printf("kvm-smoke: guest wrote '%c' to port %#x (KVM_EXIT_IO) - KVM works\n", b, port);

    /* 2. PIO round trips on one vCPU. */
    v0.iterations = n_pio;
    pio_thread(&v0);
    if (!v0.ok) {
        fprintf(stderr, "kvm-smoke: FAIL: PIO loop\n");
        return 1;
    }
    printf("kvm-smoke: %ld KVM_RUN->PIO exit round trips: %.3f s, %.1f us each\n", n_pio,
           v0.seconds, v0.seconds / n_pio * 1e6);

    /* 3. Guest compute speed vs native. */
    vcpu_init(&v1, 1, LOOP_ENTRY);
    t0 = now();
    port = run_to_pio(&v1, &b);
    t_guest = now() - t0;
    if (port != 0x3f9) {
        fprintf(stderr, "kvm-smoke: FAIL: loop vCPU exit port=%#x\n", port);
        return 1;
    }
    t0 = now();
    native_loop(n_loop);
    t_native = now() - t0;
    printf("kvm-smoke: %u dec/jnz iterations: guest %.3f s (%.1f M/s), "
           "native %.3f s (%.1f M/s), guest/native time ratio %.2f\n",
           n_loop, t_guest, n_loop / t_guest / 1e6, t_native, n_loop / t_native / 1e6,
           t_guest / t_native);

    /* 4. Two vCPUs concurrently (vcpu0 and a new vcpu2), one thread each. */
    pthread_t th[2];
    vcpu_init(&v2, 2, PIO_ENTRY);
    v0.iterations = v2.iterations = n_pio / 4 > 0 ? n_pio / 4 : 1;
    t0 = now();
    pthread_create(&th[0], NULL, pio_thread, &v0);
    pthread_create(&th[1], NULL, pio_thread, &v2);
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);
    if (!v0.ok || !v2.ok) {
        fprintf(stderr, "kvm-smoke: FAIL: concurrent vCPUs\n");
        return 1;
    }
    printf("kvm-smoke: 2 vCPUs in parallel, %ld PIO exits each: %.3f s wall\n", v0.iterations,
           now() - t0);

    printf("kvm-smoke: OK\n");
    return 0;
}
