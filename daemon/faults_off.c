/* The installed budgetd's test seams: none (daemon/faults.h). */
#include "faults.h"

int faults_install(store_options *sopt, server_config *cfg)
{
    (void)sopt;
    (void)cfg;
    return 0;
}
