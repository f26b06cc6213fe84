// The views, in the navigation's order. Each is {id, title, role (the least role that sees it), View}.
import overview from './overview.js';
import map from './map.js';
import equipment from './equipment.js';
import plots from './plots.js';
import show from './show.js';
import cues from './cues.js';
import dmx from './dmx.js';
import compliance from './compliance.js';
import replay from './replay.js';
import admin from './admin.js';

export default [overview, map, equipment, plots, show, cues, dmx, compliance, replay, admin];
