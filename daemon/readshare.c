/* The reads' account of the loop thread's time (readshare.h). */
#include "readshare.h"

uint64_t read_account_settle(read_account *a, uint64_t now, uint64_t read_ns, uint64_t slice_ns,
                             bool writes_waiting, bool reads_waiting)
{
    uint32_t share = a->share_pct;
    uint64_t passed = now - a->at_ns;

    a->at_ns = now;
    if (share == 0 || share >= 100) {
        a->credit_ns = 0;
        return 0;
    }
    if (passed > 1000000000u)
        passed = 1000000000u; /* more than any cap; keeps the product in range */
    if (read_ns > 1000000000u)
        read_ns = 1000000000u;
    int64_t credit = a->credit_ns + (int64_t)(passed * share / 100u) - (int64_t)read_ns;
    /* Debts of turns that left no read waiting do not pile up into one long rest. */
    int64_t cap = (int64_t)(slice_ns < 1000000000u ? slice_ns : 1000000000u);
    int64_t floor = -(int64_t)(read_ns > (uint64_t)cap ? read_ns : (uint64_t)cap);
    if (floor > -READ_DEBT_MIN_NS)
        floor = -READ_DEBT_MIN_NS;
    if (credit > cap)
        credit = cap;
    if (credit < floor)
        credit = floor;
    if (!writes_waiting && credit < 0)
        credit = 0; /* reads alone are never held back, nor held back later for it */
    a->credit_ns = credit;
    if (credit >= 0 || !reads_waiting)
        return 0;
    uint64_t rest_ns = (uint64_t)(-credit) * 100u / share;
    return rest_ns > READ_REST_SLACK_NS ? rest_ns : 0;
}
