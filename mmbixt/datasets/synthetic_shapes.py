"""Procedural shapes in the ShapeNetPart layout, for the demo and the tests.

Five categories with their real synsets and part ids (y is up, as in ShapeNetPart):
Airplane (body 0, wings 1, tail 2, engines 3), Chair (back 12, seat 13, legs 14, arms 15),
Lamp (base 24, shade 25, bulb 26, pole 27), Mug (body 36, handle 37), Table (top 47, legs 48,
shelf 49). The part ids are the real ones of each category; what each id means in the real data is
not claimed. Every shape is built from primitives (boxes, cylinders, ellipsoids, a frustum, a half
torus) with random proportions, sampled on the surface with normals. Some parts are optional, so
"part absent from prediction and truth" occurs as in the real data.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Callable, Sequence

import numpy as np

from .shapenet_part import SHAPENETPART_CATEGORIES

Surface = tuple[np.ndarray, np.ndarray]  # xyz [n, 3], normals [n, 3]
Sampler = Callable[[int, np.random.Generator], Surface]
DEMO_CATEGORIES = ('Airplane', 'Chair', 'Lamp', 'Mug', 'Table')
# What each part id of the shapes built here is (the ids are ShapeNetPart's, shapenet_part.py).
SYNTHETIC_PART_NAMES = {0: 'body', 1: 'wings', 2: 'tail', 3: 'engines', 12: 'back', 13: 'seat',
                        14: 'legs', 15: 'arms', 24: 'base', 25: 'shade', 26: 'bulb', 27: 'pole',
                        36: 'body', 37: 'handle', 47: 'top', 48: 'legs', 49: 'shelf'}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def box(centre: Sequence[float], half: Sequence[float]) -> tuple[float, Sampler]:
    """A box surface: area and sampler (faces picked by area)."""
    centre, half = np.asarray(centre, float), np.asarray(half, float)
    face_areas = np.array([half[1] * half[2], half[0] * half[2], half[0] * half[1]]) * 4

    def sample(n: int, rng: np.random.Generator) -> Surface:
        axis = rng.choice(3, n, p=face_areas / face_areas.sum())
        sign = rng.choice([-1.0, 1.0], n)
        local = rng.uniform(-1, 1, (n, 3))
        local[np.arange(n), axis] = sign
        normals = np.zeros((n, 3))
        normals[np.arange(n), axis] = sign
        return centre + local * half, normals
    return 2 * face_areas.sum(), sample


def cylinder(centre: Sequence[float], radius: float, half_height: float,
             axis: int = 1) -> tuple[float, Sampler]:
    """A closed cylinder along ``axis``."""
    centre = np.asarray(centre, float)
    side, cap = 2 * np.pi * radius * 2 * half_height, np.pi * radius ** 2
    others = [a for a in range(3) if a != axis]

    def sample(n: int, rng: np.random.Generator) -> Surface:
        on_cap = rng.random(n) < 2 * cap / (side + 2 * cap)
        angle = rng.uniform(0, 2 * np.pi, n)
        r = np.where(on_cap, radius * np.sqrt(rng.random(n)), radius)
        h = np.where(on_cap, rng.choice([-1.0, 1.0], n) * half_height,
                     rng.uniform(-half_height, half_height, n))
        xyz, normals = np.zeros((n, 3)), np.zeros((n, 3))
        xyz[:, others[0]], xyz[:, others[1]], xyz[:, axis] = r * np.cos(angle), r * np.sin(angle), h
        normals[:, others[0]] = np.where(on_cap, 0, np.cos(angle))
        normals[:, others[1]] = np.where(on_cap, 0, np.sin(angle))
        normals[:, axis] = np.where(on_cap, np.sign(h), 0)
        return centre + xyz, normals
    return side + 2 * cap, sample


def ellipsoid(centre: Sequence[float], radii: Sequence[float]) -> tuple[float, Sampler]:
    centre, radii = np.asarray(centre, float), np.asarray(radii, float)
    p = 1.6  # Knud Thomsen's approximation of the surface area
    a, b, c = radii ** p
    area = 4 * np.pi * ((a * b + a * c + b * c) / 3) ** (1 / p)

    def sample(n: int, rng: np.random.Generator) -> Surface:
        direction = _unit(rng.normal(size=(n, 3)))
        return centre + direction * radii, _unit(direction / radii)
    return area, sample


def frustum(centre: Sequence[float], bottom_radius: float, top_radius: float,
            half_height: float) -> tuple[float, Sampler]:
    """The open side of a truncated cone along y (a lamp shade)."""
    centre = np.asarray(centre, float)
    slant = np.hypot(bottom_radius - top_radius, 2 * half_height)
    area = np.pi * (bottom_radius + top_radius) * slant

    def sample(n: int, rng: np.random.Generator) -> Surface:
        t, angle = rng.random(n), rng.uniform(0, 2 * np.pi, n)
        r = bottom_radius + (top_radius - bottom_radius) * t
        xyz = np.stack([r * np.cos(angle), -half_height + 2 * half_height * t, r * np.sin(angle)], 1)
        normals = np.stack([np.cos(angle), np.full(n, (bottom_radius - top_radius) /
                                                     (2 * half_height)), np.sin(angle)], 1)
        return centre + xyz, _unit(normals)
    return area, sample


def half_torus(centre: Sequence[float], major: float, minor: float) -> tuple[float, Sampler]:
    """Half a torus in the xy plane bulging towards +x (a mug handle)."""
    centre = np.asarray(centre, float)

    def sample(n: int, rng: np.random.Generator) -> Surface:
        theta, phi = rng.uniform(-np.pi / 2, np.pi / 2, n), rng.uniform(0, 2 * np.pi, n)
        ring = np.stack([np.cos(theta), np.sin(theta), np.zeros(n)], 1)
        normals = ring * np.cos(phi)[:, None] + np.array([0, 0, 1.0]) * np.sin(phi)[:, None]
        return centre + ring * major + normals * minor, normals
    return np.pi * major * 2 * np.pi * minor, sample


Part = tuple[int, tuple[float, Sampler]]


def _mug(rng: np.random.Generator) -> list[Part]:
    radius, half_h = rng.uniform(0.28, 0.42), rng.uniform(0.35, 0.5)
    major = rng.uniform(0.6, 0.8) * half_h
    return [(36, cylinder((0, 0, 0), radius, half_h)),
            (37, half_torus((radius, rng.uniform(-0.1, 0.1), 0), major, rng.uniform(0.04, 0.07)))]


def _table(rng: np.random.Generator) -> list[Part]:
    width, depth, height = rng.uniform(0.6, 0.9), rng.uniform(0.35, 0.6), rng.uniform(0.5, 0.8)
    thick, leg = rng.uniform(0.03, 0.06), rng.uniform(0.03, 0.05)
    parts: list[Part] = [(47, box((0, height, 0), (width, thick, depth)))]
    for sx in (-1, 1):
        for sz in (-1, 1):
            parts.append((48, box((sx * (width - 2 * leg), height / 2, sz * (depth - 2 * leg)),
                                  (leg, height / 2, leg))))
    if rng.random() < 0.5:
        parts.append((49, box((0, height * 0.25, 0), (width - 2 * leg, thick / 2, depth - 2 * leg))))
    return parts


def _chair(rng: np.random.Generator) -> list[Part]:
    width, seat_h, back_h = rng.uniform(0.35, 0.5), rng.uniform(0.35, 0.5), rng.uniform(0.4, 0.7)
    leg = rng.uniform(0.025, 0.04)
    parts: list[Part] = [(13, box((0, seat_h, 0), (width, 0.04, width))),
                         (12, box((0, seat_h + back_h / 2, -width), (width, back_h / 2, 0.04)))]
    for sx in (-1, 1):
        for sz in (-1, 1):
            parts.append((14, box((sx * (width - leg), seat_h / 2, sz * (width - leg)),
                                  (leg, seat_h / 2, leg))))
    if rng.random() < 0.5:
        for sx in (-1, 1):
            parts.append((15, box((sx * width, seat_h + 0.2, 0), (0.03, 0.03, width * 0.9))))
    return parts


def _lamp(rng: np.random.Generator) -> list[Part]:
    base_r, pole_h = rng.uniform(0.2, 0.35), rng.uniform(0.6, 1.0)
    shade_h = rng.uniform(0.15, 0.25)
    parts: list[Part] = [(24, cylinder((0, 0.03, 0), base_r, 0.03)),
                         (27, cylinder((0, pole_h / 2, 0), 0.025, pole_h / 2)),
                         (25, frustum((0, pole_h, 0), rng.uniform(0.3, 0.45), rng.uniform(0.1, 0.2),
                                      shade_h))]
    if rng.random() < 0.5:
        parts.append((26, ellipsoid((0, pole_h - 0.05, 0), (0.08, 0.1, 0.08))))
    return parts


def _airplane(rng: np.random.Generator) -> list[Part]:
    length, span = rng.uniform(0.8, 1.1), rng.uniform(0.8, 1.2)
    body_r = rng.uniform(0.08, 0.12)
    wing_z = rng.uniform(-0.1, 0.15)
    parts: list[Part] = [(0, ellipsoid((0, 0, 0), (body_r, body_r, length))),
                         (1, box((0, 0, wing_z), (span, 0.015, rng.uniform(0.1, 0.18)))),
                         (2, box((0, 0.12, -length * 0.9), (0.01, 0.12, 0.08))),
                         (2, box((0, 0.02, -length * 0.9), (0.25, 0.01, 0.06)))]
    if rng.random() < 0.7:
        for sx in (-1, 1):
            parts.append((3, cylinder((sx * span * 0.45, -0.07, wing_z + 0.05), 0.05, 0.12, axis=2)))
    return parts


SHAPE_BUILDERS: dict[str, Callable[[np.random.Generator], list[Part]]] = {
    'Airplane': _airplane, 'Chair': _chair, 'Lamp': _lamp, 'Mug': _mug, 'Table': _table}


def sample_shape(category: str, num_points: int, rng: np.random.Generator) -> np.ndarray:
    """Rows ``[num_points, 7]``: x y z nx ny nz part_id of one random shape of ``category``."""
    parts = SHAPE_BUILDERS[category](rng)
    areas = np.array([area for _, (area, _) in parts])
    counts = rng.multinomial(num_points, areas / areas.sum())
    rows = []
    for (part_id, (_, sampler)), count in zip(parts, counts):
        xyz, normals = sampler(int(count), rng)
        rows.append(np.concatenate([xyz, normals, np.full((len(xyz), 1), part_id)], axis=1))
    return np.concatenate(rows)


def make_synthetic_shapenetpart(root: str, shapes_per_split: dict[str, int] | None = None,
                                categories: Sequence[str] = DEMO_CATEGORIES,
                                points_per_shape: int = 1024, seed: int = 0) -> str:
    """Writes a ShapeNetPart-layout dataset under ``root`` (``shapes_per_split`` shapes per category
    and split; default train 24, val 4, test 6) and returns ``root``."""
    shapes_per_split = shapes_per_split or {'train': 24, 'val': 4, 'test': 6}
    rng = np.random.default_rng(seed)
    synsets = {c.name: c.synset for c in SHAPENETPART_CATEGORIES}
    os.makedirs(osp.join(root, 'train_test_split'), exist_ok=True)
    with open(osp.join(root, 'synsetoffset2category.txt'), 'w') as f:
        f.writelines(f'{c.name}\t{c.synset}\n' for c in SHAPENETPART_CATEGORIES)
    for split, count in shapes_per_split.items():
        entries = []
        for category in categories:
            folder = osp.join(root, synsets[category])
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                shape_id = f'{split}_{category.lower()}_{i:04d}'
                rows = sample_shape(category, points_per_shape, rng)
                np.savetxt(osp.join(folder, f'{shape_id}.txt'), rows,
                           fmt=['%.6f'] * 6 + ['%d'])
                entries.append(f'shape_data/{synsets[category]}/{shape_id}')
        rng.shuffle(entries)
        with open(osp.join(root, 'train_test_split', f'shuffled_{split}_file_list.json'), 'w') as f:
            json.dump(entries, f)
    return root


def make_synthetic_point_parts(root: str, counts: dict[str, int] | None = None,
                               num_points: int = 400, use_normals: bool = False,
                               seed: int = 0) -> dict[str, tuple[str, ...]]:
    """Writes procedural mugs and tables as your own clouds would be laid out for
    ``PointPartDataset``: ``<category>/<n>.txt`` rows ``x y z [nx ny nz] part`` (the part's index
    in its category) and ``train.txt``/``val.txt``/``test.txt``; returns the categories and their
    parts, as a config declares them."""
    categories = {'mug': ('body', 'handle'), 'table': ('top', 'legs', 'shelf')}
    builders = {'mug': 'Mug', 'table': 'Table'}
    counts = counts or dict(train=16, val=4, test=4)
    rng = np.random.default_rng(seed)
    for split, count in counts.items():
        entries = []
        for index in range(count):
            name = tuple(categories)[index % len(categories)]
            rows = sample_shape(builders[name], num_points, rng)
            first = min(c.parts for c in SHAPENETPART_CATEGORIES if c.name == builders[name])[0]
            columns = rows[:, :6] if use_normals else rows[:, :3]
            local = rows[:, 6:] - first
            os.makedirs(osp.join(root, name), exist_ok=True)
            entry = f'{name}/{split}_{index:03d}'
            np.savetxt(osp.join(root, entry + '.txt'), np.concatenate([columns, local], 1),
                       fmt='%.5f')
            entries.append(entry)
        with open(osp.join(root, f'{split}.txt'), 'w') as f:
            f.write('\n'.join(entries) + '\n')
    return categories
