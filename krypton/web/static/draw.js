"use strict";
// Canvas helpers for the page: the heat map over the image, and bit-packing the brush mask.
// Heat colours follow the rendered PNG: red where hiding the patch lowers the target's probability,
// blue where it raises it, transparent where nothing changes; cells not computed yet are paler.

const Draw = (() => {
  const RED = [178, 24, 43];
  const BLUE = [33, 102, 172];
  const MIN_LIMIT = 0.01;

  function size(canvas, width, height, scale) {
    canvas.width = Math.max(1, Math.round(width * scale));
    canvas.height = Math.max(1, Math.round(height * scale));
  }

  function image(canvas, img) {
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = img.width < canvas.width / 3 ? false : true;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  }

  function clear(canvas) {
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  }

  // Largest |p - heat| over the map: the colour scale, shared by maps shown side by side.
  function limit(maps, p) {
    let most = MIN_LIMIT;
    for (const map of maps) for (const v of map.heat) most = Math.max(most, Math.abs(p - v));
    return most;
  }

  // One phase map ({grid, origin, heat, computed}) onto `canvas`, whose pixels are `scale` x model pixels.
  function heat(canvas, map, p, scale, patch, stride, range) {
    const [h, w] = map.grid;
    const off = document.createElement("canvas");
    off.width = w;
    off.height = h;
    const octx = off.getContext("2d");
    const data = octx.createImageData(w, h);
    for (let k = 0; k < h * w; k++) {
      const drop = p - map.heat[k];
      const t = Math.min(1, Math.abs(drop) / range);
      const colour = drop >= 0 ? RED : BLUE;
      const known = map.computed[k] === "1";
      data.data.set([colour[0], colour[1], colour[2], Math.round(255 * Math.sqrt(t) * (known ? 1 : 0.45))], 4 * k);
    }
    octx.putImageData(data, 0, 0);
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.imageSmoothingEnabled = true;
    const [y0, x0] = map.origin;
    const left = (x0 + patch / 2 - stride / 2) * scale;
    const top = (y0 + patch / 2 - stride / 2) * scale;
    ctx.drawImage(off, left, top, w * stride * scale, h * stride * scale);
  }

  // The brush mask (one byte per model pixel) as base64 of packed bits, row-major, first pixel = top bit.
  function packMask(mask) {
    const bytes = new Uint8Array(Math.ceil(mask.length / 8));
    for (let i = 0; i < mask.length; i++) if (mask[i]) bytes[i >> 3] |= 0x80 >> (i & 7);
    let text = "";
    for (const b of bytes) text += String.fromCharCode(b);
    return btoa(text);
  }

  function rect(ctx, r, scale) {
    ctx.save();
    ctx.lineWidth = 2;
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = "#ffd400";
    ctx.fillStyle = "rgba(255, 212, 0, 0.08)";
    ctx.fillRect(r.x * scale, r.y * scale, r.width * scale, r.height * scale);
    ctx.strokeRect(r.x * scale, r.y * scale, r.width * scale, r.height * scale);
    ctx.restore();
  }

  return { size, image, clear, limit, heat, packMask, rect };
})();
