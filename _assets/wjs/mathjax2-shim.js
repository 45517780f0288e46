/* The widget manager (@jupyter-widgets/html-manager 1.x) typesets widget labels with MathJax 2's
   API, MathJax.Hub.Queue; this site runs MathJax 3, which has no Hub, so the manager threw
   "Cannot read properties of undefined (reading 'Queue')" on every page with a widget.
   Give whatever object window.MathJax holds (the configuration, then MathJax 3 itself once it
   loads) a Hub whose Queue asks MathJax 3 to typeset. Course file, MIT licence. */
(function () {
  function withHub(mj) {
    if (mj && typeof mj === "object" && !mj.Hub) {
      Object.defineProperty(mj, "Hub", {
        enumerable: false,
        value: {
          Queue: function () {
            if (window.MathJax && window.MathJax.typesetPromise) { window.MathJax.typesetPromise(); }
          },
        },
      });
    }
    return mj;
  }
  var current = withHub(window.MathJax);
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    get: function () { return current; },
    set: function (value) { current = withHub(value); },
  });
})();
