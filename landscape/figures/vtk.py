"""Surfaces for 3-D viewers: a surface result file as VTK XML PolyData (.vtp, ASCII), which
ParaView opens, as loss-landscape's h52vtp.py makes them.

Points are the grid's (alpha, beta, loss) in the file's [ny, nx] order, row by row; each grid cell
is one quadrilateral; the loss is also point data ("loss"). Non-square grids are fine (h52vtp.py
assumes square ones). Points not computed (NaN) are refused: a surface still being computed has
no shape yet.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from landscape.errors import BadInput
from landscape.files import create_exclusive, publish, temporary
from landscape.results import read_result


def _numbers(values: np.ndarray, per_line: int) -> str:
    rows = values.reshape(-1, per_line) if per_line > 1 else values.reshape(-1, 1)
    return "\n".join("          " + " ".join(f"{v:.9g}" for v in row) for row in rows)


def write_vtp(result_path: str | Path, split: str = "train", out: str | Path | None = None,
              *, log: bool = False) -> Path:
    """OUT (default: beside the file, <name>.<split>_loss.vtp) from a surface result file; `log`
    draws log(loss) as the height, as h52vtp.py's --log (log(z + 0.1))."""
    result_path = Path(result_path)
    attrs, a = read_result(result_path, "slice")
    if int(attrs["directions"]) != 2:
        raise BadInput(f"{result_path} is a 1-D slice; only surfaces (--2d) have a .vtp form")
    key = f"{split}_loss"
    if key not in a:
        raise BadInput(f"{result_path} has no {key}")
    z = np.asarray(a[key], dtype=np.float64)                     # [ny, nx]
    if not np.isfinite(z).all():
        raise BadInput(f"{result_path}: {int((~np.isfinite(z)).sum())} points are not computed "
                       "(finish the surface first)")
    if log:
        z = np.log(z + 0.1)
    x, y = np.meshgrid(a["xcoordinates"], a["ycoordinates"])   # [ny, nx] each
    ny, nx = z.shape
    points = np.stack([x.ravel(), y.ravel(), z.ravel()], 1)    # [ny * nx, 3]
    j, i = np.meshgrid(np.arange(ny - 1), np.arange(nx - 1), indexing="ij")
    corner = (j * nx + i).ravel()
    quads = np.stack([corner, corner + 1, corner + nx + 1, corner + nx], 1)  # [cells, 4]
    text = "\n".join([
        '<?xml version="1.0"?>',
        '<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">',
        "  <PolyData>",
        f'    <Piece NumberOfPoints="{len(points)}" NumberOfVerts="0" NumberOfLines="0" '
        f'NumberOfStrips="0" NumberOfPolys="{len(quads)}">',
        '      <PointData Scalars="loss">',
        '        <DataArray type="Float64" Name="loss" format="ascii">',
        _numbers(z.ravel(), 1),
        "        </DataArray>",
        "      </PointData>",
        "      <Points>",
        '        <DataArray type="Float64" NumberOfComponents="3" format="ascii">',
        _numbers(points, 3),
        "        </DataArray>",
        "      </Points>",
        "      <Polys>",
        '        <DataArray type="Int64" Name="connectivity" format="ascii">',
        _numbers(quads.ravel(), 4),
        "        </DataArray>",
        '        <DataArray type="Int64" Name="offsets" format="ascii">',
        _numbers(4 * np.arange(1, len(quads) + 1), 1),
        "        </DataArray>",
        "      </Polys>",
        "    </Piece>",
        "  </PolyData>",
        "</VTKFile>", ""])
    out = Path(out) if out is not None else result_path.with_name(
        result_path.name.removesuffix(".h5") + f".{key}{'_log' if log else ''}.vtp")
    with temporary(out) as partial:
        with os.fdopen(create_exclusive(partial), "w") as f:  # never through a planted link
            f.write(text)
        publish(partial, out, replace=True)
    return out
