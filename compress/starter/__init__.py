"""`compress init`: a starter config that fits a model, read off the model itself.

- config   the starter's text: the sections, the passes that fit what the model is made of,
           and the check that it runs as written with the given data
- facts    what init reads off a model file (format, inputs, fixed batch, makeup)
- folder   ... and off a model folder (architecture, task, tokenizer)
- data     the data given with --data, described for the config (npz, csv, images, text)
- makeup   what a model is made of (convolutions, MatMuls, attention), from its weights or graph
"""
