"""Wire types only (sans-IO): the native protocol's frames (`native`), the dialect codec
interface and the native codec (`codec`), the compatible dialects (`dialects`), and the upload
routes' shapes (`openai`, `chatserver`). Import each from its module."""
