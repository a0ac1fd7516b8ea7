"""Files from elsewhere (issue 29): no pickled code runs from any directory or through any loader,
remote files cannot hang or poison the cache, and damaged or mismatched tensors are refused."""
from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch
from mmengine.runner.checkpoint import CheckpointLoader

import mmbixt.operations  # noqa: F401  (installs the safe loaders in mmengine's table)
from mmbixt.checkpoint import (CheckpointError, PlainCheckpoint, normalise_checkpoint,
                               read_checkpoint)
from mmbixt.checkpoint.loading import apply_state_dict
from mmbixt.checkpoint.model_match import HEADS_ENTRY, apply_whole_model, attention_heads
from mmbixt.checkpoint.remote import cache_path
from mmbixt.models.backbones import BiXTBackbone

REPO = Path(__file__).resolve().parents[1]
TINY = dict(embed_dims=32, num_heads=2, num_latents=8, num_layers=2)


def backbone(init_cfg=None, **arch) -> BiXTBackbone:
    return BiXTBackbone(arch=TINY | arch, out_indices=(1,), init_cfg=init_cfg)


class WritesMarker:
    """Unpickling this creates ``path`` (``open(path, 'w')``): proof that code from a file ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, 'w')


def payload(folder: Path) -> tuple[Path, Path]:
    marker = folder / 'code_ran'
    path = folder / 'evil.pth'
    torch.save({'state_dict': backbone().state_dict(), 'meta': WritesMarker(marker)}, path)
    return path, marker


def plain_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['OMP_NUM_THREADS'] = '1'
    return env


# ------------------------------------------------------------------ 1. no code from a file
def test_clone_folder_named_mmbixt_imports_the_real_package_from_the_folder_above(tmp_path):
    """A clone named mmbixt, Python started above it: the package inside is imported (not an
    empty namespace package), so its modules are registered, mmseg's init_model with a shipped
    config loads through the safe reader (the config names mmbixt.operations) and refuses the
    payload, and so does our own loading API."""
    (tmp_path / 'mmbixt').symlink_to(REPO, target_is_directory=True)
    evil, marker = payload(tmp_path)
    config = tmp_path / 'mmbixt' / 'configs' / 'bixt' / 'demo_upernet_bixt_ti.py'
    script = f'''
import mmbixt
from mmseg.apis import init_model
from mmseg.registry import MODELS
print('file', mmbixt.__file__)
print('registered', 'BiXTEncoderDecoder' in MODELS.module_dict)
for load in (lambda: init_model({str(config)!r}, {str(evil)!r}, device='cpu'),
             lambda: mmbixt.checkpoint.normalise_checkpoint({str(evil)!r})):
    try:
        load()
    except Exception as err:
        print('refused', type(err).__name__, err)
'''
    out = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, env=plain_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f'file {tmp_path}/mmbixt/mmbixt/__init__.py' in out.stdout
    assert 'registered True' in out.stdout
    assert out.stdout.count('refused CheckpointError') == 2, out.stdout + out.stderr[-2000:]
    assert 'asks to load io.open' in out.stdout
    assert not marker.exists()


def test_folder_named_mmbixt_without_the_package_stops_with_one_line(tmp_path):
    clone = tmp_path / 'mmbixt'
    clone.mkdir()
    (clone / '__init__.py').write_bytes((REPO / '__init__.py').read_bytes())
    out = subprocess.run([sys.executable, '-c', 'import mmbixt'], cwd=tmp_path, env=plain_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith('ImportError: ') and f'{clone}' in last and 'holds no mmbixt' in last


def test_our_loading_never_goes_through_a_loader_that_unpickles(tmp_path):
    """Whoever registered what for local paths in mmengine (here mmengine's own loader, which
    falls back to weights_only=False), our loading functions read through the safe reader."""
    from mmengine.runner.checkpoint import load_from_local
    from mmbixt.operations.safe_loading import install_safe_loading
    evil, marker = payload(tmp_path)
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
    try:
        with pytest.raises(CheckpointError, match='asks to load io.open'):
            normalise_checkpoint(str(evil))
        with pytest.raises(CheckpointError, match='asks to load io.open'):
            backbone(init_cfg=dict(type='Pretrained', checkpoint=str(evil))).init_weights()
    finally:
        install_safe_loading()
    assert not marker.exists()


def test_tools_make_torch_refuse_code_even_in_mmengines_own_loader(tmp_path):
    """Every tool runs under run_cli, which forces torch's weights-only reading process-wide: even
    mmengine's own loader, which retries a refused file with weights_only=False, cannot run a
    payload, and the one line printed gives no advice to unpickle."""
    evil, marker = payload(tmp_path)
    script = f'''
import sys
from mmengine.runner.checkpoint import load_from_local
from mmbixt.operations.cli import run_cli
sys.exit(run_cli(lambda argv: load_from_local({str(evil)!r}, 'cpu'), []))
'''
    env = plain_env() | {'PYTHONPATH': str(REPO)}
    out = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 1, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith('error: Weights only load failed')
    assert 'weights_only' not in last and 'Re-running' not in last
    assert not marker.exists()


def test_legacy_tar_is_refused_without_advice_to_run_code(tmp_path):
    import io
    import tarfile
    path = tmp_path / 'old.tar'
    with tarfile.open(path, 'w', format=tarfile.PAX_FORMAT) as tar:
        for name in ('storages', 'tensors', 'pickle'):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b'x'))
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f'{path}: is a tar archive') and 'refused unread' in message
    assert 'weights_only' not in message and 'Re-running' not in message


# ------------------------------------------------------------------ 5. integrity
def member_data_offset(path: Path, suffix: str) -> int:
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
    with open(path, 'rb') as f:
        f.seek(info.header_offset + 26)
        name_length, extra_length = (int.from_bytes(f.read(2), 'little') for _ in range(2))
    return info.header_offset + 30 + name_length + extra_length


def test_bit_rot_inside_a_tensor_is_refused(tmp_path):
    path = tmp_path / 'rot.pth'
    torch.save({'state_dict': {'w': torch.zeros(256)}}, path)
    offset = member_data_offset(path, 'data/0') + 100
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10  # still a finite float: only the CRC can tell
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf'^{path}: is a damaged zip archive \(Bad CRC-32'):
        read_checkpoint(path)


def test_integer_tensor_where_a_float_weight_belongs_is_refused_naming_the_key():
    model = backbone()
    state = model.state_dict()
    state['core.latents'] = state['core.latents'].long()
    with pytest.raises(CheckpointError, match=r'another kind of number than the model, e\.g\. '
                                              r'core\.latents int64 where the model has float32'):
        apply_state_dict(model, PlainCheckpoint('x.pth', state, {}))
    half = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    apply_state_dict(backbone(), PlainCheckpoint('half.pth', half, {}))  # same kind: loads


def test_negative_batchnorm_variance_is_refused_naming_the_key(tmp_path):
    bn = torch.nn.BatchNorm2d(4)
    state = {f'decode_head.bn.{k}': v for k, v in bn.state_dict().items()}
    state['decode_head.bn.running_var'][2] = -0.5
    path = tmp_path / 'negvar.pth'
    torch.save({'state_dict': state}, path)
    with pytest.raises(CheckpointError, match=r'negative BatchNorm variance in '
                                              r'decode_head\.bn\.running_var \(lowest -0\.5\)'):
        read_checkpoint(path)


def test_checkpoint_of_another_head_count_is_refused_naming_the_module():
    two, four = backbone(num_heads=2), backbone(num_heads=4)
    assert {k: v.shape for k, v in two.state_dict().items()} == \
        {k: v.shape for k, v in four.state_dict().items()}
    raw = {'state_dict': two.state_dict(), 'meta': {HEADS_ENTRY: attention_heads(two)}}
    with pytest.raises(CheckpointError, match=r'other attention head counts than the model: '
                                              r'core\.\S+\.num_heads is 2 in the file and 4'):
        apply_whole_model(four, PlainCheckpoint('two.pth', two.state_dict(), raw))
    apply_whole_model(backbone(num_heads=2), PlainCheckpoint('two.pth', two.state_dict(), raw))


# ------------------------------------------------------------------ 4. remote files
class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` by path; ``/stall`` sends headers and 1000 bytes, then nothing;
    ``/silent`` never answers; ``/cut/X`` announces X whole and sends half; ``/page`` serves
    HTML; ``/moved/X`` redirects to ``/X``."""
    files: dict[str, bytes] = {}
    requests: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802  (http.server's name)
        self.requests.append(self.path)
        if self.path == '/silent':
            time.sleep(5)
            return
        if self.path.startswith('/moved/'):
            self.send_response(302)
            self.send_header('Location', self.path[len('/moved'):])
            self.end_headers()
            return
        if self.path == '/page/model.pth':
            return self.send(b'<!DOCTYPE html><html><body>Sign in</body></html>', 'text/html')
        if self.path == '/stall':
            self.send_response(200)
            self.send_header('Content-Length', '100000')
            self.end_headers()
            self.wfile.write(b'\0' * 1000)
            self.wfile.flush()
            time.sleep(5)
            return
        cut = self.path.startswith('/cut/')
        body = self.files.get(self.path[len('/cut'):] if cut else self.path)
        if body is None:
            self.send_error(404)
            return
        self.send(body[:len(body) // 2] if cut else body, 'application/octet-stream', len(body))

    def send(self, body: bytes, kind: str, length: int | None = None):
        self.send_response(200)
        self.send_header('Content-Type', kind)
        self.send_header('Content-Length', str(length if length is not None else len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setenv('MMBIXT_DOWNLOAD_TIMEOUT', '1')
    Handler.files, Handler.requests = {}, []
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()


def checkpoint_bytes(tmp_path: Path, value: float) -> bytes:
    path = tmp_path / f'ckpt_{value}.pth'
    torch.save({'state_dict': {'w': torch.full((4,), value)}}, path)
    return path.read_bytes()


@pytest.mark.parametrize('route', ['/stall', '/silent'])
def test_a_stalled_server_ends_in_bounded_time_naming_the_address(server, route):
    url = server + route
    start = time.monotonic()
    with pytest.raises(CheckpointError, match=rf'^{url}: did not answer within 1 s'):
        CheckpointLoader.load_checkpoint(url)
    assert time.monotonic() - start < 4
    assert not os.path.exists(cache_path(url))


def test_two_addresses_with_one_file_name_never_share_the_cache(server, tmp_path):
    Handler.files = {'/v1/model.pth': checkpoint_bytes(tmp_path, 1.0),
                     '/v2/model.pth': checkpoint_bytes(tmp_path, 2.0)}
    first = CheckpointLoader.load_checkpoint(f'{server}/v1/model.pth')
    second = CheckpointLoader.load_checkpoint(f'{server}/v2/model.pth')
    assert first['state_dict']['w'][0] == 1 and second['state_dict']['w'][0] == 2
    assert cache_path(f'{server}/v1/model.pth') != cache_path(f'{server}/v2/model.pth')
    CheckpointLoader.load_checkpoint(f'{server}/v1/model.pth')  # now from the cache
    assert Handler.requests == ['/v1/model.pth', '/v2/model.pth']


def test_a_cut_download_or_a_web_page_is_deleted_and_the_next_run_downloads_again(server, tmp_path):
    Handler.files = {'/model.pth': checkpoint_bytes(tmp_path, 3.0)}
    for url, problem in ((f'{server}/cut/model.pth', 'was cut short'),
                         (f'{server}/page/model.pth', 'served a web page')):
        with pytest.raises(CheckpointError) as info:
            CheckpointLoader.load_checkpoint(url)
        message = str(info.value)
        assert message.startswith(f'{url}: {problem}') and cache_path(url) in message
        assert not os.path.exists(cache_path(url))
        assert os.listdir(os.path.dirname(cache_path(url))) == []  # no temporary left either
    # A poisoned cache file (here: an HTML page an older version kept) is deleted and fetched anew.
    url = f'{server}/model.pth'
    os.makedirs(os.path.dirname(cache_path(url)), exist_ok=True)
    Path(cache_path(url)).write_bytes(b'<html>old page</html>')
    assert CheckpointLoader.load_checkpoint(url)['state_dict']['w'][0] == 3
    assert Handler.requests[-1] == '/model.pth'


def test_a_redirect_is_followed_and_cached_under_the_address_asked_for(server, tmp_path):
    Handler.files = {'/real/model.pth': checkpoint_bytes(tmp_path, 4.0)}
    url = f'{server}/moved/real/model.pth'
    assert CheckpointLoader.load_checkpoint(url)['state_dict']['w'][0] == 4
    assert os.path.isfile(cache_path(url))


def test_a_bad_timeout_setting_is_refused_naming_it(server, monkeypatch):
    monkeypatch.setenv('MMBIXT_DOWNLOAD_TIMEOUT', 'soon')
    with pytest.raises(ValueError, match=r"^MMBIXT_DOWNLOAD_TIMEOUT='soon' is not valid: give a "
                                         'positive number of seconds'):
        CheckpointLoader.load_checkpoint(f'{server}/x.pth')


def test_the_editable_layout_of_make_setup_outranks_a_folder_named_mmbixt(tmp_path):
    """``make setup`` installs in setuptools' compat mode: a .pth path entry naming the clone.
    Python's path scan prefers a regular package on any entry to a namespace folder, so a stray
    folder named mmbixt in the working directory (an output folder, say) cannot shadow it (the
    default editable finder runs after the scan and loses to such a folder)."""
    from setuptools import build_meta
    build = tmp_path / 'build'
    build.mkdir()
    for name in ('setup.py', 'mmbixt'):
        (build / name).symlink_to(REPO / name)
    here = os.getcwd()
    os.chdir(build)
    try:
        wheel = build_meta.build_editable(str(tmp_path / 'wheel'), {'editable_mode': 'compat'})
    finally:
        os.chdir(here)
    site = tmp_path / 'site'
    with zipfile.ZipFile(tmp_path / 'wheel' / wheel) as archive:
        archive.extractall(site)
    (tmp_path / 'mmbixt').mkdir()  # the stray folder, in the working directory
    script = (f'import site; site.addsitedir({str(site)!r}); import mmbixt.archs; '
              'print(mmbixt.archs.__file__)')
    out = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, env=plain_env(),
                         capture_output=True, text=True, timeout=120)
    # the real package: the one installed here (build/mmbixt), or the one the environment's own
    # `make setup` install names first; never the stray folder (it holds no archs.py)
    imported = Path(out.stdout.strip() or '/nonexistent')
    assert imported.name == 'archs.py' and imported.is_file(), out.stderr[-2000:]
    assert (imported.parent / '__init__.py').is_file()
    assert tmp_path / 'mmbixt' not in imported.parents
