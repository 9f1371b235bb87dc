from oklog.net.http import MAX_HEADER_BYTES, h11_incomplete_bound


def test_h11_bound_is_one_read_smaller_than_the_header_limit() -> None:
    # one hypercorn read (64 KiB) less, plus h11's 8 KiB slack — not (x + 8) << 10
    assert h11_incomplete_bound(128 << 10) == (64 << 10) + (8 << 10)
    assert h11_incomplete_bound(1 << 20) == (1 << 20) - (56 << 10)
    assert h11_incomplete_bound(MAX_HEADER_BYTES) == 8 << 10
    assert h11_incomplete_bound(0) == 8 << 10
