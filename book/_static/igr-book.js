// igr-book: open every figure of a page full size on click, in the page (a small lightbox that
// needs no library and no network). Escape, a click or Enter closes it.
(function () {
  "use strict";
  function fullSource(img) {
    // a figure wrapped in a link to an image (the gallery) opens that image
    const link = img.closest("a[href]");
    if (link && /\.(png|svg|jpe?g|gif|webp)(\?|#|$)/i.test(link.getAttribute("href"))) {
      return link.href;
    }
    return img.currentSrc || img.src;
  }
  function setup() {
    const box = document.createElement("div");
    box.className = "igr-lightbox";
    box.hidden = true;
    box.setAttribute("role", "dialog");
    box.setAttribute("aria-label", "figure at full size (click or press Escape to close)");
    document.body.appendChild(box);
    let opener = null;
    let big = null;  // made on opening only: a page never holds an image without a source
    function close() {
      box.hidden = true;
      if (big) big.remove();
      big = null;
      if (opener) opener.focus();
    }
    function open(img) {
      opener = img;
      if (big) big.remove();
      big = document.createElement("img");
      box.appendChild(big);
      big.src = fullSource(img);
      big.alt = img.alt || "";
      box.hidden = false;
      box.tabIndex = -1;
      box.focus();
    }
    box.addEventListener("click", close);
    document.addEventListener("keydown", function (e) {
      if (!box.hidden && (e.key === "Escape" || e.key === "Enter")) close();
    });
    document.querySelectorAll(".bd-article img").forEach(function (img) {
      img.classList.add("igr-zoomable");
      img.tabIndex = 0;
      img.setAttribute("role", "button");
      img.title = img.title || "click to open full size";
      img.addEventListener("click", function (e) {
        e.preventDefault();
        open(img);
      });
      img.addEventListener("keydown", function (e) {
        if (box.hidden && e.key === "Enter") {
          e.preventDefault();
          open(img);
        }
      });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setup);
  else setup();
})();
