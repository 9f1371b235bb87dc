"""The ``replicate_segfile`` meta key: what a store member advertises when its
/store/replicate takes segment files; the codec checks its type."""

from __future__ import annotations

import pytest

from oklog.cluster.codec import check_meta
from oklog.records import segfile


def test_the_advertised_version_passes():
    check_meta({"api_addr": "127.0.0.1:7650", "replicate_segfile": segfile.INDEX_VERSION})


@pytest.mark.parametrize("bad", ["1", 1.0, True, -1, None, [1]])
def test_anything_but_a_version_number_is_refused(bad):
    with pytest.raises(ValueError, match="replicate_segfile"):
        check_meta({"replicate_segfile": bad})
