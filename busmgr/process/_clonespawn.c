/*
 * busmgr's clone spawn: one process, born in its cgroup, set up, exec'd; no Python in the child.
 *
 * busmgr_clonespawn(req) creates the child with clone3(CLONE_VM | CLONE_VFORK |
 * CLONE_INTO_CGROUP) on a stack of its own (as posix_spawn does with clone, plus the cgroup):
 * nothing of the manager is copied, the manager is suspended until the child has exec'd or
 * exited, and the child is inside the job's cgroup from its first instruction without anyone
 * migrating (a migration waits for the kernel's cgroup threadgroup lock, an RCU grace period:
 * 8-20 ms after a quiet spell). The child applies the job's settings in the order privileges
 * require and execs; a step that fails is written into the request (the memory is shared) and
 * the child exits 127, after which the manager reaps it here: a failed child never reaches
 * the manager's reaper. Where clone3 or CLONE_INTO_CGROUP is missing (kernels before 5.7), or
 * on an architecture without the clone3 trampoline below, the child is made by vfork() and
 * joins its cgroup itself by writing cgroup.procs: correct, and slower the first time.
 *
 * The child shares the manager's memory and thread pointer until exec: it runs only this file's
 * code on its own stack, allocates nothing, takes no lock, and changes credentials with the
 * raw system calls (glibc's setuid() would signal the manager's other threads, of which there
 * are none, but the child must not even look). Every value the child needs (user and group
 * ids, supplementary groups, capability numbers) was looked up by the caller.
 *
 * Built by setuptools as an optional extension (setup.py) and loaded with ctypes by
 * busmgr/process/clonespawn.py; it includes no Python header and knows nothing of Python.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_VM
#define CLONE_VM 0x00000100
#endif
#ifndef CLONE_VFORK
#define CLONE_VFORK 0x00004000
#endif
#define BUSMGR_CLONE_INTO_CGROUP 0x200000000ULL
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#define BUSMGR_CLOSE_RANGE_CLOEXEC 4
#define BUSMGR_PR_CAP_AMBIENT 47
#define BUSMGR_PR_CAP_AMBIENT_RAISE 2
#define BUSMGR_CAP_V3 0x20080522
#define BUSMGR_IOPRIO_WHO_PROCESS 1

#define STACK_SIZE (256 * 1024)

/* Credentials by the raw system calls, with 32-bit ids where the architecture has both. */
#ifdef SYS_setgid32
#define BUSMGR_SYS_SETGID SYS_setgid32
#define BUSMGR_SYS_SETUID SYS_setuid32
#define BUSMGR_SYS_SETGROUPS SYS_setgroups32
#else
#define BUSMGR_SYS_SETGID SYS_setgid
#define BUSMGR_SYS_SETUID SYS_setuid
#define BUSMGR_SYS_SETGROUPS SYS_setgroups
#endif

/* Which step failed (the caller turns it into 'setuid "nobody": Operation not permitted'). */
enum step {
    STEP_NONE = 0,
    STEP_SIGNALS,
    STEP_SETSID,
    STEP_CGROUP,
    STEP_CONSOLE,
    STEP_LISTEN,
    STEP_OOM,
    STEP_LIMIT,  /* failed_index: which limit */
    STEP_NICE,
    STEP_IONICE,
    STEP_GROUPS,
    STEP_CHROOT,
    STEP_CHDIR,
    STEP_CAPS,
    STEP_SETGID,
    STEP_SETUID,
    STEP_EXEC,
    STEP_CLONE,  /* in the parent: neither clone3 nor vfork made a child */
};

struct busmgr_limit {
    int resource;
    uint64_t soft;
    uint64_t hard;
};

/* One spawn. Every pointer stays valid for the call; -1 (or NULL) means "leave as is". */
struct busmgr_spawn {
    const char *path;          /* the file to execve; NULL: search search_path for argv[0] */
    char *const *argv;
    char **envp;               /* envp[listen_pid_slot] is replaced in the child */
    const char *search_path;   /* PATH to search (after chroot) when path is NULL */
    int cgroup_fd;             /* directory fd of the cgroup to be born in, or -1 */
    const char *cgroup_procs;  /* its cgroup.procs, for the vfork fallback */
    int setsid;
    int stdin_fd, stdout_fd, stderr_fd;
    const int *keep_fds;       /* inherited at the same number */
    int n_keep;
    const int *moves;          /* listen sockets: (op, fd, target) triples, op 0 dup2, 1 close */
    int n_moves;
    int n_listen;              /* the sockets end up at 3 .. 3 + n_listen - 1 */
    int listen_pid_slot;       /* index in envp where "LISTEN_PID=<pid>" goes, or -1 */
    int oom_score_set, oom_score;
    const struct busmgr_limit *limits;
    int n_limits;
    int nice_set, nice;
    int ioprio;                /* ioprio_set value, or -1 */
    int groups_set;            /* setgroups(groups) (initgroups' list, or none) */
    const gid_t *groups;
    int n_groups;
    const char *chroot_dir;
    const char *chdir_dir;
    int umask;                 /* or -1 */
    int caps_set;              /* keep only caps_mask (bounding set, then capset, ambient) */
    uint64_t caps_mask;
    int cap_last;              /* one past the highest capability of this kernel */
    long gid, uid;             /* or -1 */
    /* out */
    int failed_step;
    int failed_errno;
    int failed_index;
    int used_clone3;           /* 1: born in the cgroup by clone3; 0: vfork (joined itself) */
};

static void fail(struct busmgr_spawn *req, int step, int index)
{
    req->failed_errno = errno ? errno : EINVAL;
    req->failed_index = index;
    req->failed_step = step;
    _exit(127);
}

/* Decimal text of n into buf (at least 24 bytes), returning its start. */
static char *decimal(char *end, long n)
{
    int neg = n < 0;
    unsigned long u = neg ? -(unsigned long)n : (unsigned long)n;
    *--end = '\0';
    do {
        *--end = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (neg)
        *--end = '-';
    return end;
}

static int inherit(int fd)
{
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0)
        return -1;
    return fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
}

static int onto(int fd, int target)
{
    if (fd < 0)
        return 0;
    if (fd == target)
        return inherit(fd);
    return dup2(fd, target) < 0 ? -1 : 0;
}

static int write_text(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, text, strlen(text));
    int saved = errno;
    close(fd);
    errno = saved;
    return n < 0 ? -1 : 0;
}

/* Mark every descriptor above the sockets close-on-exec, except those the program inherits
 * (a kernel without close_range leaves them as they are: the manager's are close-on-exec). */
static void cloexec_others(const struct busmgr_spawn *req)
{
    unsigned int lo = 3 + (unsigned int)req->n_listen;
    for (;;) {
        unsigned int next = ~0U;  /* the lowest kept descriptor >= lo */
        for (int i = 0; i < req->n_keep; i++)
            if ((unsigned int)req->keep_fds[i] >= lo && (unsigned int)req->keep_fds[i] < next)
                next = (unsigned int)req->keep_fds[i];
        if (next > lo)
            syscall(SYS_close_range, lo, next == ~0U ? ~0U : next - 1, BUSMGR_CLOSE_RANGE_CLOEXEC);
        if (next == ~0U)
            return;
        lo = next + 1;
    }
}

static void exec_program(struct busmgr_spawn *req)
{
    if (req->path != NULL) {
        execve(req->path, req->argv, req->envp);
        fail(req, STEP_EXEC, 0);
    }
    const char *name = req->argv[0];
    if (strchr(name, '/') != NULL) {
        execve(name, req->argv, req->envp);
        fail(req, STEP_EXEC, 0);
    }
    /* execvpe's search, in the child's (possibly new) root, of the job's own PATH */
    char buf[4096];
    size_t len = strlen(name);
    int eacces = 0;
    const char *p = req->search_path ? req->search_path : "/usr/local/bin:/usr/bin:/bin";
    errno = ENOENT;
    for (;;) {
        const char *colon = strchr(p, ':');
        size_t dlen = colon ? (size_t)(colon - p) : strlen(p);
        if (dlen + 1 + len + 1 <= sizeof buf) {
            size_t at = 0;
            if (dlen == 0) {
                buf[at++] = '.';
            } else {
                memcpy(buf, p, dlen);
                at = dlen;
            }
            buf[at++] = '/';
            memcpy(buf + at, name, len + 1);
            execve(buf, req->argv, req->envp);
            if (errno == EACCES)
                eacces = 1;
            else if (errno != ENOENT && errno != ENOTDIR && errno != ESTALE && errno != ENODEV
                     && errno != ETIMEDOUT)
                fail(req, STEP_EXEC, 0);
        }
        if (colon == NULL)
            break;
        p = colon + 1;
    }
    errno = eacces ? EACCES : ENOENT;
    fail(req, STEP_EXEC, 0);
}

/* The child: the order is that of busmgr/process/forkpath.py's _child_setup. */
static int child_main(void *arg)
{
    struct busmgr_spawn *req = arg;
    char pidbuf[48];
    errno = 0;

    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL);  /* EINVAL for the few glibc keeps to itself */

    if (req->setsid && setsid() < 0)
        fail(req, STEP_SETSID, 0);
    if (req->cgroup_fd >= 0 && !req->used_clone3 && write_text(req->cgroup_procs, "0") < 0)
        fail(req, STEP_CGROUP, 0);

    if (onto(req->stdin_fd, 0) < 0 || onto(req->stdout_fd, 1) < 0 || onto(req->stderr_fd, 2) < 0)
        fail(req, STEP_CONSOLE, 0);
    for (int i = 0; i < req->n_keep; i++)
        if (inherit(req->keep_fds[i]) < 0)
            fail(req, STEP_CONSOLE, 0);
    for (int i = 0; i < req->n_moves; i++) {
        const int *m = req->moves + 3 * i;
        if (m[0] == 0 ? onto(m[1], m[2]) < 0 : close(m[1]) < 0)
            fail(req, STEP_LISTEN, 0);
    }
    if (req->listen_pid_slot >= 0) {
        static const char key[] = "LISTEN_PID=";
        char *digits = decimal(pidbuf + sizeof pidbuf, (long)syscall(SYS_getpid));
        char *start = digits - (sizeof key - 1);
        memcpy(start, key, sizeof key - 1);
        req->envp[req->listen_pid_slot] = start;
    }
    cloexec_others(req);

    if (req->oom_score_set) {
        char num[24];
        if (write_text("/proc/self/oom_score_adj", decimal(num + sizeof num, req->oom_score)) < 0)
            fail(req, STEP_OOM, 0);
    }
    for (int i = 0; i < req->n_limits; i++) {
        struct rlimit lim = {req->limits[i].soft, req->limits[i].hard};
        if (setrlimit(req->limits[i].resource, &lim) < 0)
            fail(req, STEP_LIMIT, i);
    }
    if (req->nice_set && setpriority(PRIO_PROCESS, 0, req->nice) < 0)
        fail(req, STEP_NICE, 0);
    if (req->ioprio >= 0
        && syscall(SYS_ioprio_set, BUSMGR_IOPRIO_WHO_PROCESS, 0, req->ioprio) < 0)
        fail(req, STEP_IONICE, 0);

    if (req->groups_set && syscall(BUSMGR_SYS_SETGROUPS, (size_t)req->n_groups, req->groups) < 0)
        fail(req, STEP_GROUPS, 0);
    if (req->chroot_dir != NULL && chroot(req->chroot_dir) < 0)
        fail(req, STEP_CHROOT, 0);
    if (req->chdir_dir != NULL && chdir(req->chdir_dir) < 0)
        fail(req, STEP_CHDIR, 0);
    if (req->umask >= 0)
        umask((mode_t)req->umask);

    if (req->caps_set) {
        for (int cap = 0; cap < req->cap_last; cap++)
            if (!(req->caps_mask & (1ULL << cap)) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
                fail(req, STEP_CAPS, 0);
        if (req->uid > 0 && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
            fail(req, STEP_CAPS, 0);
    }
    if (req->gid >= 0 && syscall(BUSMGR_SYS_SETGID, (gid_t)req->gid) < 0)
        fail(req, STEP_SETGID, 0);
    if (req->uid >= 0 && syscall(BUSMGR_SYS_SETUID, (uid_t)req->uid) < 0)
        fail(req, STEP_SETUID, 0);
    if (req->caps_set) {
        struct {
            uint32_t version;
            int pid;
        } header = {BUSMGR_CAP_V3, 0};
        struct {
            uint32_t effective, permitted, inheritable;
        } data[2];
        for (int i = 0; i < 2; i++) {
            uint32_t word = (uint32_t)(req->caps_mask >> (32 * i));
            data[i].effective = data[i].permitted = data[i].inheritable = word;
        }
        if (syscall(SYS_capset, &header, data) < 0)
            fail(req, STEP_CAPS, 0);
        if (req->uid > 0)
            for (int cap = 0; cap < 64; cap++)
                if ((req->caps_mask & (1ULL << cap))
                    && prctl(BUSMGR_PR_CAP_AMBIENT, BUSMGR_PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0)
                    fail(req, STEP_CAPS, 0);
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
            fail(req, STEP_CAPS, 0);
    }

    sigset_t none;
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
        fail(req, STEP_SIGNALS, 0);
    exec_program(req);
    return 127;
}

/* clone3 with a stack of its own, the child running fn(arg) there and exiting with its
 * value: only in assembly, since the child must not return into the caller's frames. */
#if defined(__x86_64__)
#define HAVE_CLONE3_TRAMPOLINE 1
struct clone_args_v2 {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
    uint64_t set_tid, set_tid_size, cgroup;
};

static long clone3_on_stack(struct clone_args_v2 *args, int (*fn)(void *), void *arg)
{
    long ret;
    register long r8 __asm__("r8") = (long)fn;
    register long r9 __asm__("r9") = (long)arg;
    __asm__ volatile(
        "syscall\n\t"
        "test %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        /* the child: rsp is the top of its own stack, r8 and r9 as the parent had them */
        "xor %%ebp, %%ebp\n\t"
        "mov %%r9, %%rdi\n\t"
        "call *%%r8\n\t"
        "mov %%eax, %%edi\n\t"
        "mov $60, %%eax\n\t" /* SYS_exit */
        "syscall\n\t"
        "hlt\n\t"
        "1:\n\t"
        : "=a"(ret)
        : "0"((long)SYS_clone3), "D"(args), "S"(sizeof *args), "r"(r8), "r"(r9)
        : "rcx", "r11", "memory", "cc");
    return ret;
}
#else
#define HAVE_CLONE3_TRAMPOLINE 0
#endif

/* The fallback: vfork, the child joining its cgroup itself. Kept out of line, so that no
 * local of the caller lives across the two returns. */
static __attribute__((noinline)) pid_t vfork_child(struct busmgr_spawn *req)
{
    pid_t pid = vfork();
    if (pid == 0) {
        child_main(req);
        _exit(127);
    }
    return pid;
}

/* Whether clone3 into a cgroup works here; -1 unknown, 0 no, 1 yes (learnt on first use). */
static int clone3_works = -1;

/* Start req's program; its pid, or -1 with req->failed_step and failed_errno set (the
 * child, if one was made, is reaped). Blocks every signal until the child has exec'd. */
pid_t busmgr_clonespawn(struct busmgr_spawn *req)
{
    sigset_t all, old;
    pid_t pid = -1;
    req->failed_step = STEP_NONE;
    req->failed_errno = 0;
    req->failed_index = 0;
    req->used_clone3 = 0;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);

    void *stack = MAP_FAILED;
    if (HAVE_CLONE3_TRAMPOLINE && clone3_works != 0)
        stack = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
#if HAVE_CLONE3_TRAMPOLINE
    if (stack != MAP_FAILED) {
        struct clone_args_v2 args;
        memset(&args, 0, sizeof args);
        args.flags = CLONE_VM | CLONE_VFORK;
        args.exit_signal = SIGCHLD;
        args.stack = (uint64_t)(uintptr_t)stack;
        args.stack_size = STACK_SIZE;
        if (req->cgroup_fd >= 0) {
            args.flags |= BUSMGR_CLONE_INTO_CGROUP;
            args.cgroup = (uint64_t)req->cgroup_fd;
        }
        req->used_clone3 = 1;
        long r = clone3_on_stack(&args, child_main, req);
        if (r >= 0) {
            pid = (pid_t)r;
            clone3_works = 1;
        } else {
            req->used_clone3 = 0;
            if (r == -ENOSYS || r == -E2BIG || (r == -EINVAL && clone3_works != 1))
                clone3_works = 0;  /* an older kernel: vfork from now on */
            else {
                req->failed_step = req->cgroup_fd >= 0 ? STEP_CGROUP : STEP_CLONE;
                req->failed_errno = (int)-r;
            }
        }
    }
#endif
    if (pid < 0 && req->failed_step == STEP_NONE) {
        pid = vfork_child(req);
        if (pid < 0) {
            req->failed_step = STEP_CLONE;
            req->failed_errno = errno;
        }
    }
    if (stack != MAP_FAILED)
        munmap(stack, STACK_SIZE);
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (pid > 0 && req->failed_step != STEP_NONE) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        return -1;
    }
    return pid;
}

/* Whether to try clone3 (the default) or to use vfork from now on (the fallback's path, which
 * the tests take on purpose). */
void busmgr_clonespawn_use_clone3(int on)
{
    clone3_works = on ? -1 : 0;
}

/* The size of struct busmgr_spawn: the binding checks its own layout against it once. */
int busmgr_clonespawn_size(void)
{
    return (int)sizeof(struct busmgr_spawn);
}
