"""Every ```python snippet of README.md and docs/*.md runs as written: each page's snippets in
order, in one namespace (README's each on its own, in a fresh interpreter: a reader copies one of
them), in a temporary folder that sees the repository's configs/ and tools/ (as
a reader in the repository root does). A snippet that needs an unavailable download is marked by a
`<!-- snippet: skip (reason) -->` line right above its fence and is reported as skipped. Bash
blocks are checked for what they name: tools/ scripts, configs and make targets must exist; links
between the pages must resolve."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
SKIP_MARK = re.compile(r'<!-- snippet: skip \((.+)\) -->')
FENCE = re.compile(r'^```(\w*)\s*$')
VISIBLE_TO_SNIPPETS = ('configs', 'tools')  # linked into the snippets' working folder
ON_THEIR_OWN = ('README.md',)  # pages whose snippets each run alone, in a fresh interpreter


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    skip: Optional[str]  # the reason, for a snippet marked to be skipped

    @property
    def name(self) -> str:
        return f'{self.page.relative_to(REPO)}:{self.line}'


def fenced_blocks(page: Path) -> list[Block]:
    """The page's fenced code blocks, with the skip mark of the line above each."""
    blocks, lines = [], page.read_text().splitlines()
    start = None
    for number, line in enumerate(lines):
        match = FENCE.match(line)
        if not match:
            continue
        if start is None:
            start, language = number, match.group(1)
            continue
        previous = next((text for text in reversed(lines[:start]) if text.strip()), '')
        mark = SKIP_MARK.fullmatch(previous.strip())
        blocks.append(Block(page, start + 1, language, '\n'.join(lines[start + 1:number]),
                            mark.group(1) if mark else None))
        start = None
    assert start is None, f'{page}: unclosed code fence at line {start + 1}'
    return blocks


SNIPPETS = [block for page in PAGES for block in fenced_blocks(page) if block.language == 'python']
BASH = [block for page in PAGES for block in fenced_blocks(page) if block.language == 'bash']


class PageRun:
    """One page's namespace and folder; snippets run in page order, each once."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.namespace: dict = {'__name__': '__snippets__'}
        self.done: set[int] = set()
        for name in VISIBLE_TO_SNIPPETS:
            (folder / name).symlink_to(REPO / name)


@pytest.fixture(scope='module')
def page_runs(tmp_path_factory) -> dict:
    return {page: PageRun(tmp_path_factory.mktemp(page.stem)) for page in PAGES}


def run_alone(block: Block, folder: Path) -> None:
    """Runs the snippet by itself in a fresh interpreter (nothing imported or registered yet)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    done = subprocess.run([sys.executable, '-c', block.code], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f'{block.name} fails on its own:\n{done.stderr[-3000:]}'


def run_snippet(block: Block, run: PageRun) -> None:
    if block.page.name in ON_THEIR_OWN:
        run_alone(block, run.folder)
        run.done.add(block.line)
        return
    code = compile(block.code, block.name, 'exec')
    previous = os.getcwd()
    os.chdir(run.folder)
    try:
        exec(code, run.namespace)
    finally:
        os.chdir(previous)
    run.done.add(block.line)


@pytest.mark.parametrize('block', SNIPPETS, ids=[block.name for block in SNIPPETS])
def test_python_snippet_runs_as_written(block: Block, page_runs: dict):
    if block.skip:
        pytest.skip(f'marked in the page: {block.skip}')
    run = page_runs[block.page]
    for earlier in SNIPPETS:  # the page's earlier snippets first (when run alone, e.g. with -k)
        if earlier.page == block.page and earlier.line < block.line and not earlier.skip \
                and earlier.line not in run.done:
            run_snippet(earlier, run)
    run_snippet(block, run)


def test_skips_are_rare():
    skipped = [block.name for block in SNIPPETS if block.skip]
    assert len(skipped) <= 2, f'snippets marked to be skipped: {skipped}; let them build ' \
                              'what they need instead'


MAKE_TARGETS = set(re.findall(r'^([\w-]+):', (REPO / 'Makefile').read_text(), re.M))
NAMED_FILE = re.compile(r'(?<![\w/.])((?:tools|configs)/[\w/.-]+\.(?:py|sh))\b')


@pytest.mark.parametrize('block', BASH, ids=[block.name for block in BASH])
def test_bash_block_names_what_exists(block: Block):
    created = set()  # by a `cp` earlier in the block
    for line in block.code.splitlines():
        command = line.split('#')[0]
        if command.lstrip().startswith('cp '):
            created.add(command.split()[-1])
        for path in NAMED_FILE.findall(command):
            assert path in created or (REPO / path).is_file(), \
                f'{block.name}: {path} does not exist'
        for target in re.findall(r'\bmake ([\w-]+)', command):
            assert target in MAKE_TARGETS, f'{block.name}: no make target {target}'


LINK = re.compile(r'\]\(([^)#\s]+)(?:#[^)]*)?\)')


@pytest.mark.parametrize('page', PAGES, ids=[str(page.relative_to(REPO)) for page in PAGES])
def test_links_between_pages_resolve(page: Path):
    for target in LINK.findall(page.read_text()):
        if '://' not in target:
            assert (page.parent / target).exists(), f'{page.name}: link to {target} is broken'
