"""The Markdown tables of the results and the scaling plot."""
from __future__ import annotations

from pathlib import Path

from .common import HEADS, PEAK_SIZE, VIT_LIMIT_GB
from .goals import Row


def forward_table(forward: list[dict]) -> str:
    lines = ['| input | peer | ms | vs mmbixt fp32 | GFLOP/s | share of fp32 peak |',
             '|---|---|---:|---:|---:|---:|']
    for group in forward:
        if 'ms' not in group:
            lines.append(f'| {group.get("size")} /{group.get("stride")} | error | '
                         f'{group.get("error", "")} | | | |')
            continue
        times = group['ms']
        peak = min((v for k, v in times.items() if k.startswith('matmul fp32')), default=None)
        peak_gflops = 2 * PEAK_SIZE ** 3 / 1e9 / (peak / 1e3) if peak else None
        base = times.get('mmbixt fp32')
        for name, value in times.items():
            is_peak = name.startswith('matmul')
            flop = 2 * PEAK_SIZE ** 3 / 1e9 if is_peak else group['gflop']
            gflops = flop / (value / 1e3) if 'mmbixt' in name or 'original' in name or is_peak else None
            lines.append(
                f'| {"%d^3" % PEAK_SIZE if is_peak else "%d px, Ti/%d" % (group["size"], group["stride"])} '
                f'| {name} | {value:.1f} | {"" if is_peak or not base else f"{base / value:.2f}x"} '
                f'| {"" if gflops is None else f"{gflops:.0f}"} '
                f'| {"" if gflops is None or not peak_gflops else f"{gflops / peak_gflops:.0%}"} |')
        lines += [f'| {group["size"]} px, Ti/{group["stride"]} | {name} | {why} '
                  '| | | |' for name, why in group.get('skipped', {}).items()]
    return '\n'.join(lines)


def segment_table(groups: list[dict]) -> str:
    lines = ['| whole-image inference (test_step) | input | ms | peak MB | vs ViT-Ti/16 fp32 |',
             '|---|---|---:|---:|---:|']
    for group in groups:
        title = f'{HEADS.get(group.get("head"), group.get("head"))}'
        if 'runs' not in group:
            lines.append(f'| {title} | {group.get("size")} | error: {group.get("error", "")} | | |')
            continue
        vit = group['runs'].get('ViT-Ti/16 fp32', {}).get('ms')
        for name, run in group['runs'].items():
            versus = f'{vit / run["ms"]:.2f}x' if vit else ''
            lines.append(f'| {title}-{name} | {group["size"]} | {run["ms"]:.0f} | '
                         f'{run["peak_mb"]:.0f} | {versus} |')
    return '\n'.join(lines)


def split_table(groups: list[dict]) -> str:
    lines = ['| where the time goes (BiXT-Ti/16, whole image) | backbone ms | neck ms '
             '| decode head ms | head share |', '|---|---:|---:|---:|---:|']
    for group in groups:
        for mode, parts in group.get('split', {}).items():
            total = sum(parts.values())
            lines.append(f'| {HEADS[group["head"]]}, {group["size"]} px, {mode} | '
                         f'{parts["backbone"]:.0f} | '
                         f'{parts["neck"]:.0f} | {parts["decode head"]:.0f} | '
                         f'{parts["decode head"] / total:.0%} |')
    return '\n'.join(lines)


def cases_table(title: str, cases: dict) -> str:
    lines = [f'| {title} | ms | peak MB |', '|---|---:|---:|']
    for case, r in cases.items():
        value = (f'{r["ms"]:.0f} | {r["peak_mb"]:.0f}' if 'ms' in r
                 else f'error: {r.get("error", "")} |')
        lines.append(f'| {case_label(case)} | {value} |')
    return '\n'.join(lines)


def case_label(case: str) -> str:
    parts = case.split(':')
    if len(parts) == 3:
        return f'{HEADS[parts[0]]}-{parts[1]}, {parts[2]} px'
    return f'UPerNet-{parts[0]}, {parts[1]} px'


def scaling_table(peers: list[dict]) -> str:
    lines = ['| backbone forward, fp32, batch 1 | input | ms | peak MB |', '|---|---|---:|---:|']
    for peer in peers:
        if 'points' not in peer:
            lines.append(f'| {peer.get("peer")} | | error: {peer.get("error", "")} | |')
            continue
        for size, point in peer['points'].items():
            value = (f'{point["ms"]:.0f} | {point["peak_mb"]:.0f}' if 'ms' in point
                     else f'skipped: {point.get("skipped", point.get("error"))} |')
            lines.append(f'| {peer["peer"]} | {size} | {value} |')
    return '\n'.join(lines)


def targets_table(rows: list[Row]) -> str:
    return '\n'.join(['| goal (issue 22; 30.x: issue 30) | measured | |', '|---|---:|---|'] + [
        f'| {name} | {value} | {"-" if ok is None else "PASS" if ok else "MISS"} |'
        for name, value, ok in rows])


def plot(peers: list[dict], path: Path, title: str) -> None:
    """Forward time and peak memory against the input size, log-log, one line per peer."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for peer in peers:
        points = sorted((int(size), p) for size, p in peer.get('points', {}).items() if 'ms' in p)
        if not points:
            continue
        sizes = [size for size, _ in points]
        line, = ax_time.plot(sizes, [p['ms'] for _, p in points], 'o-', label=peer['peer'])
        ax_mem.plot(sizes, [p['peak_mb'] / 1024 for _, p in points], 'o-', color=line.get_color(),
                    label=peer['peer'])
        skipped = [int(s) for s, p in peer.get('points', {}).items() if 'skipped' in p]
        if skipped:
            ax_time.annotate(f'> {VIT_LIMIT_GB} GB from {min(skipped)} px: not run',
                             (sizes[-1], points[-1][1]['ms']), fontsize=7)
    sizes = sorted({int(s) for peer in peers for s in peer.get('points', {})})
    for ax, label in ((ax_time, 'forward time [ms]'), (ax_mem, 'peak memory [GB]')):
        ax.set(xscale='log', yscale='log', xlabel='input size [px], square image', ylabel=label)
        ax.set_xticks(sizes, [str(s) for s in sizes], rotation=45)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(True, which='both', alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
