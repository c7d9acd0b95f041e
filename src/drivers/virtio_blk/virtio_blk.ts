/**
 * virtio-blk device facts (virtio 1.x, §5.2): feature bits, request types and status codes,
 * and the layout of the device configuration space. Pure data, no I/O.
 *
 * @module
 */

/** Feature bits (bit numbers, as bigints so they combine with 64-bit feature words). */
export const VirtioFeature = {
  /** size_max in config: maximum length of one segment. */
  BLK_SIZE_MAX: 1n,
  /** seg_max in config: maximum number of data segments per request. */
  BLK_SEG_MAX: 2n,
  /** The device is read-only. */
  BLK_RO: 5n,
  /** blk_size in config: the logical block size. */
  BLK_BLK_SIZE: 6n,
  /** VIRTIO_BLK_T_FLUSH works. */
  BLK_FLUSH: 9n,
  /** physical_block_exp, alignment_offset, min_io_size, opt_io_size in config. */
  BLK_TOPOLOGY: 10n,
  /** writeback in config tells the cache mode. */
  BLK_CONFIG_WCE: 11n,
  /** num_queues in config. */
  BLK_MQ: 12n,
  /** VIRTIO_BLK_T_DISCARD and its config limits. */
  BLK_DISCARD: 13n,
  /** VIRTIO_BLK_T_WRITE_ZEROES and its config limits. */
  BLK_WRITE_ZEROES: 14n,
  /** The front-end speaks vhost-user protocol features (vhost-user, not virtio). */
  VHOST_USER_PROTOCOL_FEATURES: 30n,
  /** Modern (virtio 1.x, little-endian) device. */
  VERSION_1: 32n,
} as const;

/** The bit mask of feature number `bit`. */
export function featureBit(bit: bigint): bigint {
  return 1n << bit;
}

/**
 * The device features this driver can use. Not negotiated: EVENT_IDX, INDIRECT_DESC and packed
 * rings (the split ring with plain flags is enough), and everything that needs a guest.
 */
export const WANTED_FEATURES: bigint = [
  VirtioFeature.BLK_SIZE_MAX,
  VirtioFeature.BLK_SEG_MAX,
  VirtioFeature.BLK_RO,
  VirtioFeature.BLK_BLK_SIZE,
  VirtioFeature.BLK_FLUSH,
  VirtioFeature.BLK_TOPOLOGY,
  VirtioFeature.BLK_CONFIG_WCE,
  VirtioFeature.BLK_MQ,
  VirtioFeature.BLK_DISCARD,
  VirtioFeature.BLK_WRITE_ZEROES,
  VirtioFeature.VHOST_USER_PROTOCOL_FEATURES,
  VirtioFeature.VERSION_1,
].reduce((mask, bit) => mask | featureBit(bit), 0n);

/** Request types (`struct virtio_blk_outhdr.type`). */
export const BlkReqType = {
  IN: 0,
  OUT: 1,
  FLUSH: 4,
  DISCARD: 11,
  WRITE_ZEROES: 13,
} as const;

/** Status byte values written by the device. */
export const BlkStatus = { OK: 0, IOERR: 1, UNSUPP: 2 } as const;

/** `struct virtio_blk_discard_write_zeroes.flags`: the device may unmap (write zeroes only). */
export const BLK_WRITE_ZEROES_FLAG_UNMAP = 1;

/** Size of `struct virtio_blk_outhdr` (type u32, ioprio u32, sector u64). */
export const OUTHDR_SIZE = 16;
/** Size of `struct virtio_blk_discard_write_zeroes` (sector u64, num_sectors u32, flags u32). */
export const DWZ_SEGMENT_SIZE = 16;
/** virtio-blk sectors are always 512 bytes, whatever blk_size says. */
export const SECTOR_SIZE = 512;

/**
 * How many bytes of `struct virtio_blk_config` the driver reads: everything up to and including
 * write_zeroes_may_unmap and its padding (older back-ends reject reads past what they know).
 */
export const CONFIG_SIZE = 60;

/** The configuration space fields the driver uses, decoded. */
export interface BlkConfig {
  /** In 512-byte sectors. */
  capacity: bigint;
  sizeMax: number;
  segMax: number;
  blkSize: number;
  physicalBlockExp: number;
  alignmentOffset: number;
  minIoSize: number;
  optIoSize: number;
  writeback: number;
  numQueues: number;
  maxDiscardSectors: number;
  maxDiscardSeg: number;
  discardSectorAlignment: number;
  maxWriteZeroesSectors: number;
  maxWriteZeroesSeg: number;
  writeZeroesMayUnmap: number;
}

/** Decodes the little-endian configuration space (at least {@link CONFIG_SIZE} bytes). */
export function parseConfig(bytes: Uint8Array): BlkConfig {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    capacity: v.getBigUint64(0, true),
    sizeMax: v.getUint32(8, true),
    segMax: v.getUint32(12, true),
    // geometry (cylinders u16, heads u8, sectors u8) at 16 is legacy and unused.
    blkSize: v.getUint32(20, true),
    physicalBlockExp: v.getUint8(24),
    alignmentOffset: v.getUint8(25),
    minIoSize: v.getUint16(26, true),
    optIoSize: v.getUint32(28, true),
    writeback: v.getUint8(32),
    numQueues: v.getUint16(34, true),
    maxDiscardSectors: v.getUint32(36, true),
    maxDiscardSeg: v.getUint32(40, true),
    discardSectorAlignment: v.getUint32(44, true),
    maxWriteZeroesSectors: v.getUint32(48, true),
    maxWriteZeroesSeg: v.getUint32(52, true),
    writeZeroesMayUnmap: v.getUint8(56),
  };
}
