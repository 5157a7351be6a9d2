// The staff page's only script (served from 'self', allowed by the CSP): shows the
// Print button on the code page. Everything else works without JavaScript.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var b = document.getElementById("print");
  if (b) {
    b.hidden = false;
    b.addEventListener("click", function () { window.print(); });
  }
});
