"""Safe extraction and checkpoint location, with hostile archives built in memory."""

import io
import tarfile
import zipfile

import pytest

from bertbuild.errors import FetchError
from bertbuild.fetch.archive import Limits, extract_archive
from bertbuild.fetch.locate import find_checkpoint_dir
from httpserver import ckpt_members, listing, make_tar, make_zip


def unpack(tmp_path, data: bytes, limits=Limits(), name="a.bin"):
    archive = tmp_path / name
    archive.write_bytes(data)
    return extract_archive(archive, tmp_path / "out", limits)


def rejected(tmp_path, data: bytes, match: str, limits=Limits()):
    """Extraction fails with `match` and leaves the directory as it was."""
    archive = tmp_path / "a.bin"
    archive.write_bytes(data)
    before = listing(tmp_path)
    with pytest.raises(FetchError, match=match) as err:
        extract_archive(archive, tmp_path / "out", limits)
    assert listing(tmp_path) == before
    assert "\n" not in str(err.value)
    return err.value


@pytest.mark.parametrize("build", [make_zip, make_tar, lambda m: make_tar(m, mode="w")])
def test_good_archives_unpack(tmp_path, build):
    out = unpack(tmp_path, build(ckpt_members("bert/ckpt/")))
    assert (out / "bert/ckpt/model.ckpt-10.index").read_bytes() == b"fake index bytes"
    assert find_checkpoint_dir(out) == out / "bert/ckpt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "out"]  # no temp dir left


def test_tar_with_dot_root_entry(tmp_path):
    dot = tarfile.TarInfo("./")
    dot.type = tarfile.DIRTYPE
    out = unpack(tmp_path, make_tar({"./bert_config.json": b"{}"}, extra=[dot]))
    assert (out / "bert_config.json").exists()


@pytest.mark.parametrize("name", ["../evil.txt", "ok/../../evil.txt", "..\\evil.txt"])
def test_zip_slip(tmp_path, name):
    rejected(tmp_path, make_zip({name: b"pwned"}), "'..' path component")
    assert not (tmp_path.parent / "evil.txt").exists()


def test_tar_slip(tmp_path):
    rejected(tmp_path, make_tar({"../evil.txt": b"pwned"}), "'..' path component")


@pytest.mark.parametrize("name", ["/etc/evil", "C:/evil", "C:\\evil"])
def test_absolute_paths(tmp_path, name):
    rejected(tmp_path, make_zip({name: b"x"}) if "C" in name else make_tar({name: b"x"}), "absolute path")


def test_zip_symlink_entry(tmp_path):
    data = make_zip(ckpt_members(), symlinks={"vocab.txt.link": "/etc/passwd"})
    rejected(tmp_path, data, "'vocab.txt.link' is a symlink")


def test_tar_symlink(tmp_path):
    link = tarfile.TarInfo("vocab.txt")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    rejected(tmp_path, make_tar({"bert_config.json": b"{}"}, extra=[link]), "symlink or hard link")


def test_tar_hardlink(tmp_path):
    link = tarfile.TarInfo("x")
    link.type, link.linkname = tarfile.LNKTYPE, "bert_config.json"
    rejected(tmp_path, make_tar({"bert_config.json": b"{}"}, extra=[link]), "symlink or hard link")


@pytest.mark.parametrize("kind", [tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_tar_special_files(tmp_path, kind):
    dev = tarfile.TarInfo("dev")
    dev.type = kind
    rejected(tmp_path, make_tar({}, extra=[dev]), "special file")


def test_zip_fifo_entry(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("fifo")
        info.external_attr = (0o010644) << 16  # S_IFIFO
        zf.writestr(info, b"")
    rejected(tmp_path, buf.getvalue(), "special file")


@pytest.mark.parametrize("build", [make_zip, make_tar])
def test_too_many_members(tmp_path, build):
    members = {f"f{i}": b"x" for i in range(4)}
    rejected(tmp_path, build(members), "more than 3 members", Limits(max_members=3))
    assert unpack(tmp_path, build(members), Limits(max_members=4)).is_dir()


@pytest.mark.parametrize("build", [make_zip, make_tar])
def test_total_size_limit(tmp_path, build):
    rejected(tmp_path, build({"a": b"x" * 600, "b": b"y" * 600}), "more than 1000 bytes", Limits(max_total_bytes=1000))


def test_zip_bomb_with_default_limits(tmp_path):
    bomb = make_zip({"bert_config.json": b"{}", "model.ckpt-10.data-00000-of-00001": bytes(8 << 20)})
    assert len(bomb) < 40_000  # 8 MiB of zeros deflates ~1000:1
    err = rejected(tmp_path, bomb, "compression ratio over 200:1")
    assert "model.ckpt-10.data" in str(err)


def test_tar_gz_bomb(tmp_path):
    rejected(tmp_path, make_tar({"zeros": bytes(4 << 20)}), "compression ratio over 50:1", Limits(max_ratio=50))


def test_small_compressible_members_are_fine(tmp_path):
    assert unpack(tmp_path, make_zip({"pad": bytes(64 << 10)})).is_dir()  # under ratio_min_bytes


def test_duplicate_zip_member(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, pytest.warns(UserWarning):
        zf.writestr("a", b"1")
        zf.writestr("a", b"2")
    rejected(tmp_path, buf.getvalue(), "cannot unpack archive: FileExistsError")


def test_corrupt_zip(tmp_path):
    data = bytearray(make_zip({"a.txt": b"hello world " * 100}))
    data[60:70] = b"\xff" * 10  # inside the deflated data: CRC or inflate fails
    rejected(tmp_path, bytes(data), "cannot unpack archive")


def test_not_an_archive(tmp_path):
    rejected(tmp_path, b'{"data": []}', "not a zip or tar archive")


# --- locate -----------------------------------------------------------------


def write_tree(root, members):
    for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def test_locate_at_root_and_nested(tmp_path):
    write_tree(tmp_path / "a", ckpt_members())
    write_tree(tmp_path / "b", ckpt_members("x/y/z/"))
    assert find_checkpoint_dir(tmp_path / "a") == tmp_path / "a"
    assert find_checkpoint_dir(tmp_path / "b") == tmp_path / "b/x/y/z"


def test_locate_accepts_unnumbered_prefix(tmp_path):
    write_tree(tmp_path, {"bert_config.json": b"{}", "model.ckpt.index": b"", "model.ckpt.data-00000-of-00001": b""})
    assert find_checkpoint_dir(tmp_path) == tmp_path


def test_locate_several_candidates(tmp_path):
    write_tree(tmp_path, {**ckpt_members("base/"), **ckpt_members("large/")})
    with pytest.raises(FetchError, match=r"several checkpoint directories \(base/, large/\)"):
        find_checkpoint_dir(tmp_path)


def test_locate_missing_index_says_what_was_found(tmp_path):
    members = {k: v for k, v in ckpt_members("ckpt/").items() if not k.endswith(".index")}
    write_tree(tmp_path, members)
    with pytest.raises(FetchError) as err:
        find_checkpoint_dir(tmp_path)
    message = str(err.value)
    assert "expected a directory with bert_config.json and model.ckpt*.index" in message
    assert "found ckpt/bert_config.json, ckpt/checkpoint" in message


def test_locate_lists_only_a_few_entries(tmp_path):
    write_tree(tmp_path, {f"f{i:02}.txt": b"" for i in range(10)})
    with pytest.raises(FetchError, match=r"found f00.txt, .*f05.txt \(\+4 more\)$"):
        find_checkpoint_dir(tmp_path)


def test_locate_empty(tmp_path):
    with pytest.raises(FetchError, match="found no files"):
        find_checkpoint_dir(tmp_path)
