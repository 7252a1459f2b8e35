// Starting and reaping CGI programs: posix_spawn (never fork in a threaded process), pidfds for
// the event loop. See clinux.h for what each function promises.
#define _GNU_SOURCE
#include "clinux.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

int aws_spawn_cgi(const char *path, char *const envp[], const char *dir, int in, int out, int err) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc) return -rc;
    rc = posix_spawnattr_init(&attr);
    if (rc) {
        posix_spawn_file_actions_destroy(&actions);
        return -rc;
    }
    // stdin, stdout, stderr from the pipes; nothing else of the server survives into the child,
    // whatever a plugin opened without O_CLOEXEC (closefrom runs after the dup2s).
    if (!rc) rc = posix_spawn_file_actions_adddup2(&actions, in, 0);
    if (!rc) rc = posix_spawn_file_actions_adddup2(&actions, out, 1);
    if (!rc) rc = posix_spawn_file_actions_adddup2(&actions, err, 2);
    if (!rc) rc = posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    if (!rc) rc = posix_spawn_file_actions_addchdir_np(&actions, dir);
    // The worker thread blocks the server's signals (they arrive by signalfd) and the server
    // ignores SIGPIPE: a script gets neither, but the defaults a program expects. Its own process
    // group lets the server end the script together with whatever it started.
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    if (!rc) rc = posix_spawnattr_setsigmask(&attr, &none);
    if (!rc) rc = posix_spawnattr_setsigdefault(&attr, &all);
    if (!rc) rc = posix_spawnattr_setpgroup(&attr, 0);
    if (!rc) rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
    pid_t pid = -1;
    char *const argv[] = {(char *)path, NULL};
    if (!rc) rc = posix_spawn(&pid, path, &actions, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    return rc ? -rc : pid;
}

int aws_pidfd_open(int pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int aws_pidfd_reap(int pidfd, int *status) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    for (;;) {
        if (waitid(P_PIDFD, (id_t)pidfd, &info, WEXITED | WNOHANG) == 0) break;
        if (errno != EINTR) return -1;
    }
    if (info.si_pid == 0) return 0;  // still running
    *status = info.si_code == CLD_EXITED ? info.si_status : 128 + info.si_status;
    return 1;
}

int aws_cgi_pipe(int fds[2], int parent_end) {
    if (pipe2(fds, O_CLOEXEC) != 0) return -1;
    // A new pipe's status flags are O_RDONLY / O_WRONLY only: set, not read-modify-write.
    if (fcntl(fds[parent_end], F_SETFL, O_NONBLOCK) != 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        errno = e;
        return -1;
    }
    return 0;
}
