-- Pandoc Lua filter applied when report.ipynb (executed) is converted to HTML or Typst.
--
-- 1. Notebook cell wrappers are removed and code-cell sources dropped: the report shows
--    results; the code stays in report.ipynb.
-- 2. text/markdown outputs (IPython.display.Markdown) arrive as raw markdown blocks; they are
--    parsed here, *before* pandoc's --ipynb-output=best selection, so tables produced by code
--    cells appear in every output format (typst would otherwise fall back to text/plain).
-- 3. An image output whose metadata carries a "caption" (IPython.display.Image(...,
--    metadata={"caption": ...})) becomes a captioned, numbered figure.

local function read_md(text)
  return pandoc.read(text, "markdown", PANDOC_READER_OPTIONS).blocks
end

function RawBlock(el)
  if el.format == "markdown" then
    return read_md(el.text)
  end
end

local function captioned_figure(el)
  if #el.content ~= 1 or el.content[1].t ~= "Image" then
    return nil
  end
  local img = el.content[1]
  local cap = img.attributes["caption"]
  if cap == nil then
    return nil
  end
  local id = img.attributes["figure-id"] or ""
  local width = img.attributes["figure-width"] or "75%"
  for _, k in ipairs({"caption", "figure-id", "figure-width", "width", "height"}) do
    img.attributes[k] = nil
  end
  img.attributes["width"] = width
  return pandoc.Figure({pandoc.Plain({img})}, read_md(cap), pandoc.Attr(id))
end

Para = captioned_figure
Plain = captioned_figure

function Div(el)
  if el.classes:includes("cell") then
    -- unwrap notebook cells (headings must not sit inside typst containers); drop code
    return el.content:filter(function(b) return b.t ~= "CodeBlock" end)
  end
end
