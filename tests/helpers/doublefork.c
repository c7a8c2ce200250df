/* The test program of seed 003 ("Supervising forking processes"): fork, parent exits; fork
 * again, parent exits; the grandchild waits for a signal. busmgr's `expect daemon` must follow
 * it to the grandchild. */
#include <sys/types.h>

#include <stdlib.h>
#include <unistd.h>

int
main (int   argc,
      char *argv[])
{
        pid_t pid;

        pid = fork ();
        if (pid > 0)
                exit (0);

        pid = fork ();
        if (pid > 0)
                exit (0);

        pause ();
        exit (0);
}
