/*
 * budgetd's test seams, read from the environment: storage faults ($BUDGETD_FAULT), a slow
 * user database ($BUDGETD_LOOKUP_DELAY), a socket path swapped for a link
 * ($BUDGETD_SOCKET_SWAP), slow worker jobs ($BUDGETD_JOB_DELAY), a clock set wrong
 * ($BUDGETD_CLOCK_OFFSET_MS) and a small write-ahead file ($BUDGETD_WAL_BYTES). budgetd-faulty
 * links daemon/faults.c, which installs them for the reliability tests; the installed budgetd links
 * daemon/faults_off.c, which installs none and reads no variable.
 */
#ifndef BUDGET_FAULTS_H
#define BUDGET_FAULTS_H

#include "server.h"
#include "store.h"

/* Puts the seams the environment asks for into the store's options and the server's
 * configuration. 0, or 2 (a usage error) after saying on stderr which variable is wrong. */
int faults_install(store_options *sopt, server_config *cfg);

#endif
