/* sono3d report page: draws the embedded plotly figures, the volume slice viewers, the phase
   switchers and the sortable tables, each when it comes near the screen. When what is on the first
   screen is drawn it sets window.SONO3D.ready (and readyMs, milliseconds since navigation started)
   and <html data-ready="1">; SONO3D.drawAll() draws everything and resolves when it is drawn
   (SONO3D.allMs). Plain ES2017, no network. */
(function () {
  'use strict';
  var S = window.SONO3D = {ready: false, readyMs: null, errors: [], marks: {start: performance.now()}};
  var CONFIG = {displaylogo: false, responsive: true};
  var GREY = [[0, '#000'], [1, '#fff']];  // ultrasound convention: low black, high white

  function bytes(text) {
    var bin = atob(text), out = new Uint8Array(bin.length);
    for (var n = 0; n < bin.length; n++) out[n] = bin.charCodeAt(n);
    return out;
  }
  function floats(text) { var u = bytes(text); return new Float32Array(u.buffer, 0, u.length >> 2); }
  function ints(text) { var u = bytes(text); return new Int32Array(u.buffer, 0, u.length >> 2); }
  function payloads(role) {
    return Array.prototype.map.call(document.querySelectorAll('script[data-role="' + role + '"]'), function (el) {
      return {target: el.getAttribute('data-target'), spec: JSON.parse(el.textContent)};
    });
  }

  /* ---- volume slices ------------------------------------------------------------------------ */
  // The volume is uint8 [X][Y][Z] in C order: voxel (i, j, k) at (i*Y + j)*Z + k.
  var VIEWS = {axial: {fixed: 2, u: 0, v: 1}, coronal: {fixed: 1, u: 0, v: 2}, sagittal: {fixed: 0, u: 1, v: 2}};

  // Returns {planes: the scene's three slice traces (to draw with the scene), draw: () => Promise}.
  function volumeViewer(id, spec) {
    var vol = spec.volume, shape = vol.shape, data = bytes(vol.data);
    var strides = [shape[1] * shape[2], shape[2], 1];
    var scale = (vol.vmax - vol.vmin) / 255, A = vol.affine;
    var names = Object.keys(VIEWS), index = {}, pending = {}, drawn = false;

    function slice(view, at, step) {
      var nu = shape[view.u], nv = shape[view.v], su = strides[view.u], sv = strides[view.v];
      var base = at * strides[view.fixed], rows = [];
      for (var b = 0; b < nv; b += step) {
        var row = new Float32Array(Math.ceil(nu / step)), off = base + b * sv;
        for (var a = 0, c = 0; a < nu; a += step, c++) row[c] = vol.vmin + data[off + a * su] * scale;
        rows.push(row);
      }
      return rows;
    }
    function axisCoord(axis, n) { return vol.axes[axis].start + n * vol.axes[axis].step; }
    function crosshair(name) {
      var view = VIEWS[name], shapes = [];
      names.forEach(function (other) {
        var ov = VIEWS[other];
        if (other === name) return;
        // Lines across the slice's own extent (voxel edges), in the plot's mm.
        var pos = axisCoord(ov.fixed, index[other]), line = {color: '#e4572e', width: 1};
        var u0 = axisCoord(view.u, -0.5), u1 = axisCoord(view.u, shape[view.u] - 0.5);
        var v0 = axisCoord(view.v, -0.5), v1 = axisCoord(view.v, shape[view.v] - 0.5);
        if (ov.fixed === view.u) shapes.push({type: 'line', xref: 'x', yref: 'y', x0: pos, x1: pos, y0: v0, y1: v1, line: line});
        if (ov.fixed === view.v) shapes.push({type: 'line', xref: 'x', yref: 'y', x0: u0, x1: u1, y0: pos, y1: pos, line: line});
      });
      return shapes;
    }
    function plane(name) {
      // The slice as a surface in world mm (through the full affine), at most ~128 samples a side.
      var view = VIEWS[name], nu = shape[view.u], nv = shape[view.v];
      var step = Math.max(1, Math.ceil(Math.max(nu, nv) / 128)), at = index[name];
      var xs = [], ys = [], zs = [], ijk = [0, 0, 0];
      ijk[view.fixed] = at;
      for (var b = 0; b < nv; b += step) {
        var rx = [], ry = [], rz = [];
        ijk[view.v] = b;
        for (var a = 0; a < nu; a += step) {
          ijk[view.u] = a;
          rx.push(A[0][0] * ijk[0] + A[0][1] * ijk[1] + A[0][2] * ijk[2] + A[0][3]);
          ry.push(A[1][0] * ijk[0] + A[1][1] * ijk[1] + A[1][2] * ijk[2] + A[1][3]);
          rz.push(A[2][0] * ijk[0] + A[2][1] * ijk[1] + A[2][2] * ijk[2] + A[2][3]);
        }
        xs.push(rx); ys.push(ry); zs.push(rz);
      }
      return {x: xs, y: ys, z: zs, surfacecolor: slice(view, at, step)};
    }
    function label(name) {
      var view = VIEWS[name], ax = vol.axes[view.fixed];
      document.getElementById(id + '-' + name + '-out').textContent =
        index[name] + ' / ' + (shape[view.fixed] - 1) + ' (' + axisCoord(view.fixed, index[name]).toFixed(1) + ' mm ' +
        ax.title.replace(' (mm)', '').replace('voxel axis ', '') + ')';
    }
    function update(name) {
      label(name);
      var jobs = [];
      if (drawn) {
        jobs.push(Plotly.restyle(id + '-' + name, {z: [slice(VIEWS[name], index[name], 1)]}, [0]));
        names.forEach(function (other) { jobs.push(Plotly.relayout(id + '-' + other, {shapes: crosshair(other)})); });
      }
      if (spec.scene) {
        var p = plane(name), n = spec.planes[names.indexOf(name)];
        if (drawnFigures[spec.scene]) {
          jobs.push(Plotly.restyle(spec.scene, {x: [p.x], y: [p.y], z: [p.z], surfacecolor: [p.surfacecolor]}, [n]));
        } else if (figures[spec.scene]) {
          Object.assign(figures[spec.scene].data[n], p);  // drawn with the scene when it comes into view
        }
      }
      return Promise.all(jobs);
    }
    function draw() {
      return Promise.all(names.map(function (name) {
        var view = VIEWS[name], au = vol.axes[view.u], av = vol.axes[view.v];
        var trace = {type: 'heatmap', z: slice(view, index[name], 1), x0: au.start, dx: au.step, y0: av.start,
          dy: av.step, colorscale: GREY, zmin: vol.vmin, zmax: vol.vmax,
          showscale: name === 'sagittal',
          hovertemplate: au.title + ' %{x:.1f}<br>' + av.title + ' %{y:.1f}<br>value %{z:.3g}<extra></extra>'};
        var layout = {margin: {l: 45, r: 10, t: 28, b: 40}, title: {text: name, font: {size: 13}},
          xaxis: {title: {text: au.title}, constrain: 'domain'},
          yaxis: {title: {text: av.title}, scaleanchor: 'x', constrain: 'domain'},
          shapes: crosshair(name), plot_bgcolor: '#000'};
        return Plotly.newPlot(id + '-' + name, [trace], layout, CONFIG);
      })).then(function () { drawn = true; });
    }

    // Sliders work before the slices are drawn (the page draws plots as they come into view).
    names.forEach(function (name) {
      var input = document.getElementById(id + '-' + name + '-range');
      index[name] = parseInt(input.value, 10);
      label(name);
      input.addEventListener('input', function () {
        index[name] = parseInt(input.value, 10);
        if (pending[name]) return;  // one redraw per animation frame while dragging
        pending[name] = true;
        requestAnimationFrame(function () { pending[name] = false; update(name); });
      });
    });
    return {planes: names.map(plane), draw: draw};
  }

  /* ---- phase switcher (ED / ES) ------------------------------------------------------------- */
  function phaseSwitcher(id, spec) {
    var fig = document.getElementById(spec.figure), input = document.getElementById(id + '-range');
    var button = document.getElementById(id + '-play'), timer = null;
    var phases = spec.phases.map(function (traces) {
      return traces.map(function (t) {
        var out = {x: floats(t.x), y: floats(t.y), z: floats(t.z)};
        if (t.i) { out.i = ints(t.i); out.j = ints(t.j); out.k = ints(t.k); }
        return out;
      });
    });
    function show(p) {
      var upd = {x: [], y: [], z: []}, hasFaces = phases[p][0] && phases[p][0].i;
      if (hasFaces) { upd.i = []; upd.j = []; upd.k = []; }
      phases[p].forEach(function (t) { Object.keys(upd).forEach(function (k) { upd[k].push(t[k]); }); });
      return Plotly.restyle(fig, upd, spec.traces);
    }
    input.addEventListener('input', function () { show(parseInt(input.value, 10)); });
    button.addEventListener('click', function () {
      if (timer) { clearInterval(timer); timer = null; button.textContent = 'play'; return; }
      button.textContent = 'stop';
      timer = setInterval(function () {
        input.value = (parseInt(input.value, 10) + 1) % phases.length;
        show(parseInt(input.value, 10));
      }, 700);
    });
    // The slider may have moved before the figure was drawn.
    return parseInt(input.value, 10) ? show(parseInt(input.value, 10)) : Promise.resolve();
  }

  /* ---- sortable tables ---------------------------------------------------------------------- */
  function sortable(table) {
    var heads = table.querySelectorAll('thead th');
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener('click', function () {
        var up = th.getAttribute('data-sort') !== 'asc';
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('data-sort'); });
        th.setAttribute('data-sort', up ? 'asc' : 'desc');
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r1, r2) {
          var c1 = r1.cells[col], c2 = r2.cells[col];
          var v1 = c1.getAttribute('data-v'), v2 = c2.getAttribute('data-v'), d;
          if (v1 !== null && v2 !== null) d = parseFloat(v1) - parseFloat(v2);
          else if (v1 !== null || v2 !== null) d = v1 === null ? 1 : -1;  // numbers before text
          else d = c1.textContent.localeCompare(c2.textContent);
          return up ? d : -d;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }

  function guard(promise) {
    return Promise.resolve(promise).catch(function (e) { S.errors.push(String(e)); console.error(e); });
  }

  /* ---- drawing, lazily ---------------------------------------------------------------------- */
  // Each plot is drawn when it comes near the screen (IntersectionObserver), so a long page is
  // interactive as soon as what is on screen is drawn. window.SONO3D.ready (and readyMs, ms since
  // navigation started) is set when the plots on the first screen are drawn; SONO3D.drawAll()
  // draws the rest at once and resolves when everything is drawn (allMs).
  var figures = {}, drawnFigures = {}, items = [];
  payloads('figure').forEach(function (p) { figures[p.target] = p.spec; });

  function figureItem(target) {
    var item = {el: document.getElementById(target), promise: null};
    item.draw = function () {
      if (!item.promise) {
        var spec = figures[target];
        item.promise = guard(Plotly.newPlot(target, spec.data, spec.layout, CONFIG).then(function () {
          drawnFigures[target] = true;
          S.marks[target] = performance.now();
        }));
      }
      return item.promise;
    };
    return item;
  }
  var byFigure = {};
  Object.keys(figures).forEach(function (target) { items.push(byFigure[target] = figureItem(target)); });
  // Volumes: their slice planes go into the 3D figure before it is drawn (one render, not two).
  payloads('volume').forEach(function (p) {
    try {
      var v = volumeViewer(p.target, p.spec), fig = p.spec.scene && figures[p.spec.scene];
      if (fig) v.planes.forEach(function (pl, n) { Object.assign(fig.data[p.spec.planes[n]], pl); });
      var item = {el: document.getElementById(p.target), promise: null};
      item.draw = function () { return item.promise || (item.promise = guard(v.draw())); };
      items.push(item);
    } catch (e) { S.errors.push(String(e)); console.error(e); }
  });
  // Phase switchers work once their figure is drawn.
  payloads('phases').forEach(function (p) {
    var fig = byFigure[p.spec.figure];
    if (!fig) return;
    var draw = fig.draw;
    fig.draw = function () {
      if (!fig.switcher) fig.switcher = draw().then(function () { return guard(phaseSwitcher(p.target, p.spec)); });
      return fig.switcher;
    };
  });

  S.drawAll = function () {
    return Promise.all(items.map(function (it) { return it.draw(); })).then(function () {
      // When the last plot was drawn (not when this was asked).
      S.allMs = Math.max.apply(null, Object.keys(S.marks).map(function (k) { return S.marks[k]; }));
    });
  };
  function finish() {
    S.marks.figures = performance.now();
    S.readyMs = performance.now();
    S.ready = true;
    document.documentElement.setAttribute('data-ready', '1');
    var note = document.getElementById('ready-note');
    if (note) note.textContent = S.errors.length ? 'some plots failed: ' + S.errors.join('; ')
      : 'drawn in ' + (S.readyMs / 1000).toFixed(1) + ' s';
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), sortable);
  if (!('IntersectionObserver' in window)) {
    S.drawAll().then(finish);
  } else {
    var first = true;
    var observer = new IntersectionObserver(function (entries) {
      var now = [];
      entries.forEach(function (entry) {
        if (!entry.isIntersecting) return;
        observer.unobserve(entry.target);
        items.forEach(function (it) { if (it.el === entry.target) now.push(it.draw()); });
      });
      if (first) { first = false; Promise.all(now).then(finish); }
    }, {rootMargin: '100px'});
    items.forEach(function (it) { observer.observe(it.el); });
    if (!items.length) finish();
  }
})();
