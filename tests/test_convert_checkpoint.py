"""tools/convert_checkpoint.py: released zip -> plain mmseg-ready .pth that loads identically."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from mmbixt.models.backbones import BiXTBackbone

from mmbixt.checkpoint import CheckpointError

from conftest import REPO, load_tool, released_layout_state, write_released_checkpoint

NAMELESS_S8 = 'bixt_ti_l64_d13_p16s8'


def run_convert(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / 'tools' / 'convert_checkpoint.py'), *args],
                          capture_output=True, text=True, timeout=300)


def test_converted_file_holds_only_the_backbone_and_loads_identically(tmp_path):
    name = 'bixt_ti_l64_d13_p16s8'
    src = write_released_checkpoint(tmp_path / f'{name}.zip', released_layout_state(name), name,
                                    zip_folder=name)
    dst = tmp_path / 'out' / 'backbone.pth'
    result = run_convert(str(src), str(dst))
    assert result.returncode == 0, result.stderr
    assert '12 bi-directional layers' in result.stdout
    converted = torch.load(dst, weights_only=True)  # plain tensors and a meta dict only
    assert converted['meta']['bixt_arch'] == name
    assert converted['meta']['source'] == f'{name}.zip'
    keys = set(converted['state_dict'])
    assert not any(k.startswith(('head.', 'fc_norm.', 'core.blocks.12.')) for k in keys)
    assert converted['meta']['token_stride'] == 8

    from_zip, from_pth = BiXTBackbone(arch=name), BiXTBackbone(arch=name)
    from_zip.load_pretrained(str(src))
    report = from_pth.load_pretrained(str(dst))
    assert report.dropped == ['fourier_pos_encode.pos']  # kept as evidence, dropped on loading
    for key, value in from_zip.state_dict().items():
        if not key.startswith('out_norms'):
            assert torch.equal(value, from_pth.state_dict()[key]), key


def test_converted_file_keeps_its_variant_for_the_variant_check(tmp_path):
    name = 'bixt_ti_l64_d13_p16'
    src = write_released_checkpoint(tmp_path / 'a.zip', released_layout_state(name), name,
                                    zip_folder='a')
    dst = tmp_path / 'a.pth'
    assert run_convert(str(src), str(dst)).returncode == 0
    try:
        BiXTBackbone(arch='bixt_ti_l64_d13_p16s4').load_pretrained(str(dst))
    except ValueError as err:
        assert 'bixt_ti_l64_d13_p16' in str(err) and 'token stride 4' in str(err)
    else:
        raise AssertionError('a p16 file loaded into a p16s4 backbone')


def test_bad_source_gives_a_clear_error_and_no_output(tmp_path):
    src = tmp_path / 'broken.zip'
    src.write_bytes(b'PK\x03\x04' + b'\0' * 100)
    dst = tmp_path / 'x.pth'
    result = run_convert(str(src), str(dst))
    assert result.returncode == 1
    assert 'broken.zip' in result.stderr and 'truncated' in result.stderr
    assert 'Traceback' not in result.stderr and not dst.exists()


def test_a_stored_name_must_agree_with_what_the_file_reveals(tmp_path):
    name = 'bixt_ti_l64_d13_p16'
    src = tmp_path / 'plain.pth'
    torch.save({'state_dict': released_layout_state(name)}, src)  # no stored name
    result = run_convert(str(src), str(tmp_path / 'ls.pth'), '--arch', 'bixt_ed256LS_l64_p16s8')
    assert result.returncode == 1 and not (tmp_path / 'ls.pth').exists()
    assert 'has no LayerScale' in result.stderr and 'width 192' in result.stderr
    result = run_convert(str(src), str(tmp_path / 'ok.pth'), '--arch', name)
    assert result.returncode == 0, result.stderr
    assert torch.load(tmp_path / 'ok.pth', weights_only=True)['meta']['bixt_arch'] == name


def convert_in_process(capsys, *args: str) -> tuple[int, str]:
    code = load_tool('convert_checkpoint').main([str(a) for a in args])
    return code, capsys.readouterr().err.strip()


def nameless_file(tmp_path, name: str = NAMELESS_S8):
    src = tmp_path / 'nameless.pth'
    torch.save({'state_dict': released_layout_state(name)}, src)  # stores no name
    return src


def test_a_converted_nameless_stride8_file_is_refused_by_a_stride16_backbone(tmp_path, capsys):
    dst = tmp_path / 'converted.pth'
    assert convert_in_process(capsys, nameless_file(tmp_path), dst)[0] == 0
    with pytest.raises(CheckpointError, match=r'converted.pth: .*token stride 8.*token stride 16'):
        BiXTBackbone(arch='bixt_ti_l64_d13_p16').load_pretrained(str(dst))
    BiXTBackbone(arch=NAMELESS_S8).load_pretrained(str(dst))  # its own stride loads


def test_an_arch_dict_is_stored_with_its_stride(tmp_path, capsys):
    dst = tmp_path / 'converted.pth'
    arch = dict(embed_dims=192, num_heads=6, num_latents=64, num_layers=12, stride=8)
    assert convert_in_process(capsys, nameless_file(tmp_path), dst, '--arch',
                              json.dumps(arch))[0] == 0
    meta = torch.load(dst, weights_only=True)['meta']
    assert meta['bixt_arch'] is None and meta['token_stride'] == 8 and meta['arch'] == arch


@pytest.mark.parametrize('arch', ['bixt_made_up_p16', 'bixt_ti_l64_p16s2', '{"depth": 3}'])
def test_arch_accepts_only_released_names_or_an_arch_dict(tmp_path, capsys, arch):
    dst = tmp_path / 'out.pth'
    code, err = convert_in_process(capsys, nameless_file(tmp_path), dst, '--arch', arch)
    err = err.splitlines()[-1]  # the tool's one line
    assert code == 1 and not dst.exists() and err.startswith('error: --arch')
    assert 'released' in err or 'arch keys' in err


def test_never_writes_over_its_input_and_over_an_output_only_with_overwrite(tmp_path, capsys):
    src = nameless_file(tmp_path)
    before = src.read_bytes()
    code, err = convert_in_process(capsys, src, src, '--overwrite')
    assert code == 1 and 'is the input checkpoint itself' in err and src.read_bytes() == before
    dst = tmp_path / 'out.pth'
    dst.write_bytes(b'keep me')
    code, err = convert_in_process(capsys, src, dst)
    assert code == 1 and 'already exists' in err and '--overwrite' in err
    assert dst.read_bytes() == b'keep me'
    assert convert_in_process(capsys, src, dst, '--overwrite')[0] == 0
    assert torch.load(dst, weights_only=True)['meta']['token_stride'] == 8


def test_the_tool_refuses_a_zip_bomb_unread_and_names_the_member_of_a_zip_with_several(
        tmp_path, capsys):
    import zipfile
    bomb = tmp_path / 'bomb.zip'
    with zipfile.ZipFile(bomb, 'w', zipfile.ZIP_DEFLATED) as archive:
        with archive.open('bixt/model_best.pth.tar', 'w', force_zip64=True) as member:
            for _ in range(16):
                member.write(bytes(1 << 20))
    code, err = convert_in_process(capsys, bomb, tmp_path / 'a.pth')
    assert code == 1 and not (tmp_path / 'a.pth').exists()
    last = err.splitlines()[-1]  # the tool's one line (earlier lines: logging noise of other tests)
    assert last.startswith(f'error: {bomb}: declares a member bixt/model_best.pth.tar of 16 MiB')

    name = NAMELESS_S8
    single = write_released_checkpoint(tmp_path / 'one.zip', released_layout_state(name), name,
                                       zip_folder='run')
    several = tmp_path / 'several.zip'
    with zipfile.ZipFile(single) as source, zipfile.ZipFile(several, 'w') as archive:
        data = source.read('run/model_best.pth.tar')
        archive.writestr('run/checkpoint-299.pth.tar', data)
        archive.writestr('run/model_best.pth.tar', data)
    import logging

    from mmengine.logging import MMLogger
    logged = []  # what reaches the console handler of mmengine's current logger
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: logged.append(record.getMessage())
    MMLogger.get_current_instance().addHandler(handler)
    try:
        code = load_tool('convert_checkpoint').main([str(several), str(tmp_path / 'b.pth')])
    finally:
        MMLogger.get_current_instance().removeHandler(handler)
    assert code == 0
    assert any('several.zip: holds 2 checkpoints' in m and m.endswith(
        'using run/model_best.pth.tar') for m in logged), logged
