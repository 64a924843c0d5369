/*
 * Small file helpers shared by what writes the daemon's own files (checkpoint keys,
 * snapshots, the write-ahead file): each returns 0 or an errno.
 */
#ifndef BUDGET_FILEIO_H
#define BUDGET_FILEIO_H

#include <stddef.h>
#include <stdint.h>

/* Writes all `size` bytes of `bytes` to `fd`, again after EINTR and short writes. */
int fileio_write_all(int fd, const void *bytes, size_t size);
/* The same at offset `at` (pwrite), and its reading counterpart (pread): EIO when the file
 * ends first. */
int fileio_pwrite_all(int fd, const void *bytes, size_t size, uint64_t at);
int fileio_pread_all(int fd, void *bytes, size_t size, uint64_t at);
/* Syncs the folder `dir`, so that a file created or renamed in it stays after a crash. */
int fileio_sync_dir(const char *dir);

#endif
