/* What a system call costs while Flowdar's lean programs are attached
 * (BENCHMARKS.md, "What the lean capture's events cost"): the best of 7
 * rounds of 500,000 non-blocking `read`s that find nothing, on a loopback
 * connection this process accepted, and of 500,000 `getppid`s (a call no
 * program watches). With an argument N it sleeps N seconds after the
 * accept first, so that `flowdar record --pid` can attach to it (its
 * socket is then seeded at attach and its reads are recorded).
 *   gcc -O2 -o /tmp/syscall_cost xtask/bench/syscall_cost.c */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t len = sizeof a;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (void *)&a, sizeof a) || listen(l, 4) || getsockname(l, (void *)&a, &len))
        return perror("listen"), 1;
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (void *)&a, sizeof a))
        return perror("connect"), 1;
    int s = accept(l, 0, 0);
    if (s < 0 || fcntl(s, F_SETFL, O_NONBLOCK))
        return perror("accept"), 1;
    if (argc > 1)
        sleep(atoi(argv[1]));
    char buf[64];
    const int n = 500000;
    double best_read = 1e18, best_getppid = 1e18;
    for (int round = 0; round < 7; round++) {
        double t = now_ns();
        for (int i = 0; i < n; i++)
            (void)!read(s, buf, sizeof buf);
        double r = (now_ns() - t) / n;
        t = now_ns();
        for (int i = 0; i < n; i++)
            getppid();
        double g = (now_ns() - t) / n;
        best_read = r < best_read ? r : best_read;
        best_getppid = g < best_getppid ? g : best_getppid;
    }
    printf("read %.0f ns getppid %.0f ns\n", best_read, best_getppid);
    return 0;
}
