/*
 * sbt.h: the Oracle SBT 2.0 media-management interface as libsbtmover
 * implements it (types, item codes, error codes, entry points). Written
 * from ../shared/specs/sbt.md; LP64 (unsigned long is 8 bytes).
 */
#ifndef SHMOVER_SBT_H
#define SHMOVER_SBT_H

#include <stddef.h>
#include <time.h>

typedef unsigned long sbt_ulong;

/* v1 error block, still used by sbtinit. */
typedef struct bserc {
    int bsercoer;
    int bsercerrno;
} bserc;

/* Every item list: { type, value }, 16 bytes. */
typedef struct sbt_item {
    sbt_ulong type;
    void *value;
} sbt_item;
typedef sbt_item sbtinit_input, sbtinit_output, sbtinit2_input, sbtinit2_output, sbtbfinfo, sbtobject;

/* sbtinit input/output (lists end with type 1). */
#define SBTINIT_INEND 1
#define SBTINIT_TRACE_NAME 2
#define SBTINIT_OUTEND 1
#define SBTINIT_MMS_APIVSN 4
#define SBTINIT_MMS_DESC 5
#define SBTINIT_MMS_FPTR 6
#define SBTINIT_CTXSIZE 7
#define SBTINIT_MMSVSN 8
#define SBTINIT_PROXY 9

/* sbtinit2 input (ends with 9999). */
#define SBTINIT2_TRACE_LEVEL 1
#define SBTINIT2_CLIENT_APIVSN 2
#define SBTINIT2_OPERATOR_NOTIFY 3
#define SBTINIT2_END 9999

/* sbtinfo2 output (ends with 9999). */
#define SBTBFINFO_NAME 1
#define SBTBFINFO_METHOD 2
#define SBTBFINFO_CRETIME 3
#define SBTBFINFO_EXPTIME 4
#define SBTBFINFO_LABEL 5
#define SBTBFINFO_SHARE 6
#define SBTBFINFO_ORDER 7
#define SBTBFINFO_NOTFOUND 8
#define SBTBFINFO_COMMENT 9
#define SBTBFINFO_END 9999
#define SBTBFINFO_METHOD_STREAM 1
#define SBTBFINFO_SHARE_MULTIPLE 2
#define SBTBFINFO_ORDER_SEQUENTIAL 1

/* sbtbackup object list (ends with 32). */
#define SBTOBJECT_DBNAME 2
#define SBTOBJECT_DBID 3
#define SBTOBJECT_FILETYPE 5
#define SBTOBJECT_END 32

#define SBTCLOSE2_ABORT 0x1UL
#define SBTEND_ABEND 0x1UL

/* Error codes (through sbterror). */
#define SBT_ERROR_OPERATOR 7500
#define SBT_ERROR_MM 7501
#define SBT_ERROR_NOTFOUND 7502
#define SBT_ERROR_EXISTS 7503
#define SBT_ERROR_EOF 7504
#define SBT_ERROR_NOPROXY 7505
#define SBT_ERROR_NOWORK 7506
/* sbtinit's bserc codes. */
#define SBTINIT_ERROR_ARG 7110
#define SBTINIT_ERROR_SYS 7111

/* Sizes including the NUL. */
#define SBT_ERROR_TEXT_MAX 1024
#define SBT_FILENAME_MAX 512
#define SBT_MMS_DESC_MAX 64
#define SBT_LABEL_MAX 64
#define SBT_COMMENT_MAX 80
#define SBT_COMMAND_MAX 512
#define SBT_DBNAME_MAX 9

#define SBT_APIVSN(maj, min) (((sbt_ulong)(maj) << 8) | (sbt_ulong)(min))
#define SBT_MMSVSN(a, b, c, d) \
    (((sbt_ulong)(a) << 24) | ((sbt_ulong)(b) << 16) | ((sbt_ulong)(c) << 8) | (sbt_ulong)(d))

/* The 21-slot function table sbtinit returns (SBTINIT_MMS_FPTR). */
typedef struct sbt_mms_fptr {
    int (*sbtbackup)(void *, sbt_ulong, char *, sbtobject *, size_t, size_t, unsigned int, unsigned int);
    int (*sbtclose2)(void *, sbt_ulong);
    int (*sbtcommand)(void *, sbt_ulong, char *);
    int (*sbtend)(void *, sbt_ulong);
    int (*sbterror)(void *, sbt_ulong, sbt_ulong *, char **, char **);
    int (*sbtinfo2)(void *, sbt_ulong, char **, sbtbfinfo **);
    int (*sbtinit2)(void *, sbt_ulong, sbtinit2_input *, sbtinit2_output **);
    int (*sbtread2)(void *, sbt_ulong, void *);
    int (*sbtremove2)(void *, sbt_ulong, char **);
    int (*sbtrestore)(void *, sbt_ulong, char *, size_t);
    int (*sbtwrite2)(void *, sbt_ulong, void *);
    int (*sbtpcbackup)(void *, sbt_ulong, sbt_ulong *, char *, char *, sbtobject *, sbt_ulong, sbt_ulong,
                       sbt_ulong, unsigned int);
    int (*sbtpccancel)(void *, sbt_ulong, sbt_ulong);
    int (*sbtpccommit)(void *, sbt_ulong, sbt_ulong);
    int (*sbtpcend)(void *, sbt_ulong);
    int (*sbtpcquerybackup)(void *, sbt_ulong, char *);
    int (*sbtpcqueryrestore)(void *, sbt_ulong, char *, char *);
    int (*sbtpcrestore)(void *, sbt_ulong, sbt_ulong *, char *, char *, sbt_ulong);
    int (*sbtpcstart)(void *, sbt_ulong, sbt_ulong, sbt_ulong);
    int (*sbtpcstatus)(void *, sbt_ulong, sbt_ulong, sbt_ulong *, unsigned int *);
    int (*sbtpcvalidate)(void *, sbt_ulong);
} sbt_mms_fptr;

#endif /* SHMOVER_SBT_H */
