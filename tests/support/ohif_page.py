"""What a user does in OHIF v3.13's viewer, and what it shows, read through the DevTools protocol.

OHIF exposes its services (``window.services``) and Cornerstone3D (``window.cornerstone``,
``window.cornerstoneTools``); controls carry ``data-cy`` attributes; study browser thumbnails
carry ``data-series`` (the series number). Annotations are drawn as SVG over the viewport's
canvas: an SR's lines as dashed ``<line>`` elements (``stroke-dasharray="4,4"``), its text
boxes as ``<g data-annotation-uid=...>`` with one ``<tspan>`` per line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.support.cdp import Browser

_VIEWPORT = """(id => {{ const e = cornerstone.getEnabledElements().find(e => e.viewport.id === id);
  return e ? e.viewport : null; }})({id})"""


def viewport(viewport_id: str) -> str:
    """A JavaScript expression for the Cornerstone viewport ``viewport_id`` (or null)."""
    return _VIEWPORT.format(id=json.dumps(viewport_id))


def wait_for_stack(b: Browser, viewport_id: str, n_images: int, *, timeout_s: float = 90.0) -> None:
    b.wait_for(
        f"(vp => vp && vp.getImageIds().length === {n_images} && !!vp.getCurrentImageId())"
        f"({viewport(viewport_id)})",
        what=f"a stack of {n_images} images in viewport {viewport_id}",
        timeout_s=timeout_s,
    )


def show_slice_at(b: Browser, viewport_id: str, z_mm: float) -> int:
    """Scroll viewport ``viewport_id`` to the image at ``z_mm`` (patient z); its index."""
    index = b.evaluate(
        f"""(vp => vp.getImageIds().findIndex(id => Math.abs(
            cornerstone.metaData.get('imagePlaneModule', id).imagePositionPatient[2] - {z_mm}) < 0.01)
        )({viewport(viewport_id)})"""
    )
    if index is None or index < 0:
        raise AssertionError(f"viewport {viewport_id} has no image at z = {z_mm} mm")
    b.evaluate(f"({viewport(viewport_id)}).setImageIdIndex({index})")
    b.wait_for(
        f"({viewport(viewport_id)}).getCurrentImageIdIndex() === {index}",
        what=f"image {index} shown in {viewport_id}",
    )
    b.idle(1.0)  # let it draw
    return int(index)


def current_z_mm(b: Browser, viewport_id: str) -> float:
    return float(
        b.evaluate(
            f"cornerstone.metaData.get('imagePlaneModule', ({viewport(viewport_id)}).getCurrentImageId())"
            ".imagePositionPatient[2]"
        )
    )


def page_point(b: Browser, viewport_id: str, world_mm: tuple[float, float, float]) -> tuple[float, float]:
    """Where a patient point is drawn on the page (CSS pixels): for reading a screenshot."""
    x, y = b.evaluate(
        f"""(vp => {{ const r = vp.element.getBoundingClientRect();
            const c = vp.worldToCanvas({list(world_mm)});
            return [r.x + c[0], r.y + c[1]]; }})({viewport(viewport_id)})"""
    )
    return float(x), float(y)


def zoom_on(b: Browser, viewport_id: str, world_mm: tuple[float, float, float], factor: float) -> None:
    """Centre viewport ``viewport_id`` on a point, ``factor`` times the whole-image view (for a picture)."""
    b.evaluate(
        f"""(vp => {{ vp.resetCamera(); const c = vp.getCamera(); const p = {list(world_mm)};
            const along = [0, 1, 2].map(i => c.position[i] - c.focalPoint[i]);
            const focal = [p[0], p[1], c.focalPoint[2]];
            vp.setCamera({{ focalPoint: focal, position: focal.map((v, i) => v + along[i]),
                            parallelScale: c.parallelScale / {factor} }});
            vp.render(); return true; }})({viewport(viewport_id)})"""
    )
    b.idle(0.5)


def click_button(b: Browser, text: str) -> None:
    """Click the button whose text is ``text`` (waits for it)."""
    b.wait_for(
        f"[...document.querySelectorAll('button')].some(e => e.innerText.trim() === {json.dumps(text)})",
        what=f"a '{text}' button",
    )
    b.evaluate(
        f"[...document.querySelectorAll('button')].find(e => e.innerText.trim() === {json.dumps(text)})"
        ".click()"
    )


def open_series(b: Browser, series_number: int) -> None:
    """Double-click a series' thumbnail in the study browser: it opens in the active viewport."""
    b.click_selector(f'[data-series="{series_number}"]', count=2, what=f"thumbnail of series {series_number}")


def all_listed(texts: list[str]) -> str:
    """A JavaScript expression: true when each of ``texts`` is the whole text of a visible element."""
    return f"""(want => {{ const seen = new Set([...document.querySelectorAll('body *')]
        .filter(e => e.children.length === 0 && e.offsetParent !== null).map(e => e.textContent.trim()));
        return want.every(t => seen.has(t)); }})({json.dumps(texts)})"""


@dataclass(frozen=True)
class SrMeasurement:
    """One measurement as OHIF's SR loader made it (groups merged by tracking UID)."""

    tracking_identifier: str
    tracking_uid: str
    loaded: bool
    graphic: list[str]
    labels: list[tuple[str, str]]


def sr_measurements(b: Browser) -> list[SrMeasurement]:
    found = b.evaluate(
        """services.displaySetService.getActiveDisplaySets().filter(d => d.Modality === 'SR')
            .flatMap(d => (d.measurements || []).map(m => ({
                id: m.TrackingIdentifier, uid: m.TrackingUniqueIdentifier, loaded: !!m.loaded,
                graphic: m.coords.map(c => c.ValueType + ' ' + c.GraphicType),
                labels: m.labels.map(l => [l.label, l.value]) })))"""
    )
    return [
        SrMeasurement(m["id"], m["uid"], m["loaded"], m["graphic"], [tuple(label) for label in m["labels"]])
        for m in found
    ]


def text_box(b: Browser, tracking_uid: str) -> list[str]:
    """The lines of the text box OHIF draws beside the SR measurement ``tracking_uid``."""
    return list(
        b.evaluate(
            f"""(uid => {{ const g = [...document.querySelectorAll('g[data-annotation-uid]')]
                .find(g => g.getAttribute('data-annotation-uid') === uid);
                return g ? [...g.querySelectorAll('tspan')].map(t => t.textContent) : [];
            }})({json.dumps(tracking_uid)})"""
        )
    )


def drawn_lines(b: Browser, viewport_id: str, tracking_uid: str) -> list[dict[str, Any]]:
    """The dashed SVG lines drawn for SR measurement ``tracking_uid`` on the current image.

    A line belongs to the measurement when its two ends are where Cornerstone projects the
    measurement's points (within a pixel); each comes back with its length in mm, measured
    back through the viewport (canvas to patient coordinates) from the SVG's own end points,
    and with the patient coordinates (LPS mm) OHIF placed the measurement's points at.
    """
    return list(
        b.evaluate(
            f"""((vp, uid) => {{
            const image = vp.getCurrentImageId();
            const annotations = cornerstoneTools.annotation.state.getAllAnnotations()
                .filter(a => a.data && a.data.TrackingUniqueIdentifier === uid
                             && a.metadata.referencedImageId === image);
            const svg = vp.element.querySelector('svg');
            const lines = svg ? [...svg.querySelectorAll('line')]
                .filter(l => l.getAttribute('stroke-dasharray') === '4,4') : [];
            const near = (p, q) => Math.hypot(p[0] - q[0], p[1] - q[1]) < 1;
            const out = [];
            for (const a of annotations) {{
                for (const points of (a.data.renderableData.POLYLINE || [])) {{
                    const [p, q] = points.map(w => vp.worldToCanvas(w));
                    for (const l of lines) {{
                        const s = [+l.getAttribute('x1'), +l.getAttribute('y1')];
                        const e = [+l.getAttribute('x2'), +l.getAttribute('y2')];
                        if ((near(s, p) && near(e, q)) || (near(s, q) && near(e, p))) {{
                            const [ws, we] = [vp.canvasToWorld(s), vp.canvasToWorld(e)];
                            out.push({{ length_mm: Math.hypot(...[0, 1, 2].map(i => ws[i] - we[i])),
                                       colour: l.getAttribute('stroke'), ends: [s, e],
                                       points_mm: points.map(w => Array.from(w)) }});
                        }}
                    }}
                }}
            }}
            return out; }})({viewport(viewport_id)}, {json.dumps(tracking_uid)})"""
        )
    )
