// The page's libraries, imported from here alone: Preact with its hooks, htm (templates as tagged strings, no build
// step and no eval, so the Content-Security-Policy stays strict), and uPlot for plots. Text put in a template is
// always escaped by Preact: never use dangerouslySetInnerHTML.
import { h, render, Fragment } from '../vendor/preact.module.js';
import htm from '../vendor/htm.module.js';

export { h, render, Fragment };
export {
  useState, useEffect, useRef, useMemo, useCallback, useReducer, useErrorBoundary, useId,
} from '../vendor/hooks.module.js';
export { default as uPlot } from '../vendor/uPlot.esm.js';
export const html = htm.bind(h);
