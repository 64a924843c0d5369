/*
 * BUDGET_API marks what libbudgetclient exports. The shared library is built with
 * -fvisibility=hidden, so only functions declared with it (all named budget_*) are visible.
 */
#ifndef BUDGET_EXPORT_H
#define BUDGET_EXPORT_H

#if defined(__GNUC__) || defined(__clang__)
#define BUDGET_API __attribute__((visibility("default")))
#else
#define BUDGET_API
#endif

#endif
