#ifndef TSEXPORT_CSYSTEM_H
#define TSEXPORT_CSYSTEM_H

/// Atomically exchanges two paths (Linux renameat2 with RENAME_EXCHANGE). Returns 0, or -1 with errno set
/// (EINVAL or ENOSYS where the file system or kernel cannot do it).
int tsx_exchange_paths(const char *a, const char *b);

/// flock(LOCK_EX), optionally non-blocking; returns 0, or -1 with errno (EWOULDBLOCK when held elsewhere).
int tsx_flock_exclusive(int fd, int nonblocking);

#endif
