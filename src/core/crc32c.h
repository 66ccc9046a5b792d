/*
 * crc32c.h — CRC-32C (Castagnoli), the checksum of every record and block the
 * server writes to disk: the broker's log (ADR-0005), the time-series
 * engine's write-ahead log and block files (ADR-0013).
 *
 * Pure and thread-safe (the table is built once, on first use, with
 * pthread_once).  drv_crc32c_update continues a running checksum so a record
 * can be checked in pieces: crc(a‖b) == update(update(0, a), b).
 */
#ifndef DRV_CORE_CRC32C_H
#define DRV_CORE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32C of p[0..n). */
uint32_t drv_crc32c(const void *p, size_t n);

/* Extend crc (a previous result, 0 to start) with p[0..n). */
uint32_t drv_crc32c_update(uint32_t crc, const void *p, size_t n);

#endif
