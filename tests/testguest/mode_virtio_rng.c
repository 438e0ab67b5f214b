/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* mode=rng: reads `bytes` (64) random bytes twice from virtio-rng; they must differ and not be 0.
 */
#include "virtio.h"

static bool read_random(struct vdev *d, u8 *buf, u32 len)
{
    struct vbuf b = {(u64)buf, len, true};
    u32 got = 0;

    if (!vq_request(d, &d->q[0], &b, 1, &got))
        return false;
    if (got != len) {
        fail("rng: expected %u bytes got %u", len, got);
        return false;
    }
    return true;
}

bool mode_rng(void)
{
    struct vdev d;
    u32 len = (u32)arg_u64("bytes", 64);

    if (len == 0 || len > 4096)
        len = 64;
    if (!virtio_find(4, 0, &d)) {
        fail("rng: no virtio-rng device");
        return false;
    }
    if (!virtio_setup(&d, 0, 1))
        return false;
    u8 *a = vio_page(), *b = vio_page();
    if (!read_random(&d, a, len) || !read_random(&d, b, len))
        return false;
    gprintf("RNG %lx %lx\n", *(u64 *)a, *(u64 *)b);
    u64 zero = 0;
    for (u32 i = 0; i < len; i++)
        zero |= a[i];
    if (zero == 0 || memcmp(a, b, len) == 0) {
        fail("rng: the bytes are all zero or repeat");
        return false;
    }
    pass("rng");
    return true;
}
