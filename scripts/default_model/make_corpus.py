"""Generate the Q&A corpus (chat conversations and plain-text questions) that trains the embedded default model."""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "corpus.jsonl"

# One topic per line: "name[; alias...] | answer". A name ending in "*" is plural
# ("What are bicycles?"). All facts below were written for this project.
TOPICS = """
deep learning | Deep learning is a branch of machine learning that uses neural networks with many layers. It learns patterns from large amounts of data and powers speech recognition, image recognition and language models.
machine learning; ML | Machine learning is a field of computer science where computers learn patterns from data instead of following hand-written rules. The learned model is then used to make predictions on new data.
artificial intelligence; AI | Artificial intelligence is the field of building computer systems that do tasks that normally need human intelligence, such as understanding language, recognizing images and making decisions.
a neural network; neural networks* | A neural network is a computing model made of layers of connected units called neurons. Each connection has a weight, and the weights are adjusted during training so the network learns from data.
Python; the Python programming language | Python is a popular high-level programming language known for its clear and readable syntax. It is widely used for web development, data science, automation and machine learning.
JavaScript | JavaScript is a programming language that runs in web browsers and makes web pages interactive. With Node.js it can also run on servers.
Java | Java is an object-oriented programming language that runs on the Java Virtual Machine. It is widely used for business applications, Android apps and large server systems.
C++ | C++ is a fast, compiled programming language that extends C with classes and templates. It is used for games, browsers, operating systems and other performance-critical software.
the C programming language | C is a low-level compiled programming language created in the early 1970s. It is used to write operating systems, embedded software and many other programming languages.
Rust | Rust is a systems programming language focused on speed and memory safety. Its ownership rules catch many bugs at compile time without needing a garbage collector.
Go; Golang | Go is a programming language created at Google. It is simple, compiles quickly and has built-in support for concurrency, which makes it popular for servers and cloud tools.
SQL | SQL, or Structured Query Language, is the standard language for working with relational databases. It is used to create tables and to insert, update and query data.
a database; databases* | A database is an organized collection of data stored on a computer. A database management system lets programs store, search and update that data safely.
an operating system; operating systems* | An operating system is the main software that manages a computer's hardware and runs programs. Examples are Linux, Windows, macOS and Android.
Linux | Linux is a free and open-source operating system kernel first released by Linus Torvalds in 1991. It runs most web servers, Android phones and many supercomputers.
the internet | The internet is a global network of computers that exchange data using shared protocols such as TCP/IP. It carries the web, email, video calls and much more.
the World Wide Web; the web | The World Wide Web is a system of linked pages that you open through the internet with a web browser. It was invented by Tim Berners-Lee in 1989.
a computer; computers* | A computer is an electronic machine that stores and processes data by following instructions called programs. Its main parts are the processor, memory, storage and input and output devices.
a CPU; a processor | A CPU, or central processing unit, is the main chip that executes the instructions of a computer program. It performs arithmetic, logic and control operations.
a GPU; GPUs* | A GPU, or graphics processing unit, is a processor with thousands of small cores that work in parallel. It was built for graphics and is now widely used to train neural networks.
RAM; computer memory | RAM, or random access memory, is the fast, temporary memory a computer uses to hold running programs and their data. Its contents are lost when the power is turned off.
an algorithm; algorithms* | An algorithm is a step-by-step set of instructions for solving a problem or doing a task. Sorting a list and finding the shortest route on a map are common examples.
a programming language; programming languages* | A programming language is a formal language used to write instructions that a computer can execute. Popular examples are Python, JavaScript, Java and C.
programming; coding | Programming is the process of writing instructions for computers in a programming language. Programmers design, write, test and fix code to build software.
software | Software is the set of programs and data that tell a computer what to do. Examples include operating systems, web browsers, games and apps.
computer hardware | Hardware is the physical part of a computer, such as the processor, memory, disk, keyboard and screen. Software runs on top of hardware.
cloud computing; the cloud | Cloud computing means renting computing power, storage and services over the internet instead of owning the machines. Large providers run the data centers and users pay for what they use.
a large language model; large language models*; an LLM; LLMs* | A large language model is a neural network trained on huge amounts of text to predict the next word. It can answer questions, summarize text, translate and write code.
the transformer architecture; a transformer model | The transformer is a neural network architecture based on attention. It processes all tokens of a sequence in parallel and is the basis of modern language models such as GPT.
the attention mechanism | The attention mechanism lets a neural network focus on the most relevant parts of its input. Each token computes weights over the other tokens and mixes in their information.
tokenization | Tokenization is the step of splitting text into small units called tokens, such as words or pieces of words. Language models read and write text as sequences of these tokens.
natural language processing; NLP | Natural language processing is the field of AI that helps computers understand and generate human language. It covers tasks like translation, summarization and question answering.
computer vision | Computer vision is the field of AI that teaches computers to understand images and video. It is used for face recognition, medical imaging and self-driving cars.
reinforcement learning | Reinforcement learning is a type of machine learning where an agent learns by trial and error. It takes actions in an environment and improves its behavior to earn more reward.
supervised learning | Supervised learning is a type of machine learning where a model learns from labeled examples. Each input comes with the correct answer, and the model learns to predict it.
unsupervised learning | Unsupervised learning is a type of machine learning that finds patterns in data without labels. Grouping similar items into clusters is a common example.
gradient descent | Gradient descent is an optimization method that changes a model's parameters step by step in the direction that lowers the error. It is the main way neural networks are trained.
backpropagation | Backpropagation is the algorithm that computes how much each weight in a neural network contributed to the error. These gradients are then used by gradient descent to update the weights.
overfitting | Overfitting happens when a model learns the training data too closely, including its noise, and then performs poorly on new data. More data and regularization help prevent it.
a chatbot; chatbots* | A chatbot is a computer program that talks with people in natural language. Modern chatbots are often powered by large language models.
Git | Git is a distributed version control system that tracks changes to files. Developers use it to save history, work on branches and collaborate on code.
version control | Version control is a system that records changes to files over time. It lets people see the history, undo mistakes and work together on the same project.
GitHub | GitHub is a website for hosting Git repositories. Developers use it to share code, review changes and collaborate on open-source projects.
open-source software; open source | Open-source software is software whose source code is freely available for anyone to read, change and share. Linux and Python are well-known examples.
an API; APIs* | An API, or application programming interface, is a set of rules that lets one program talk to another. Web APIs usually exchange data as JSON over HTTP.
HTTP | HTTP, the Hypertext Transfer Protocol, is the protocol that web browsers and servers use to exchange pages and data. HTTPS is its encrypted version.
JSON | JSON, or JavaScript Object Notation, is a simple text format for storing and exchanging data. It is built from objects with key and value pairs and from lists.
HTML | HTML, or HyperText Markup Language, is the language used to structure web pages. It uses tags to mark headings, paragraphs, links and images.
CSS | CSS, or Cascading Style Sheets, is the language that controls how web pages look. It sets colors, fonts, spacing and layout.
a web browser; web browsers* | A web browser is an app for viewing web pages, such as Chrome, Firefox or Safari. It downloads pages from servers and displays them.
a server; servers* | A server is a computer or program that provides data or services to other computers, called clients, over a network. Web servers send web pages to browsers.
encryption | Encryption is the process of scrambling data so that only someone with the right key can read it. It protects messages, passwords and online payments.
cybersecurity | Cybersecurity is the practice of protecting computers, networks and data from attacks and unauthorized access. It includes strong passwords, updates, encryption and firewalls.
a password; passwords* | A password is a secret string of characters used to prove who you are when you log in. Strong passwords are long and different for each account.
a computer virus; computer viruses* | A computer virus is a malicious program that copies itself and spreads to other files or computers. Antivirus software and regular updates help protect against it.
a software bug; bugs in software* | A software bug is a mistake in a program that makes it behave in an unexpected way. Programmers find and fix bugs through testing and debugging.
debugging | Debugging is the process of finding and fixing errors in a program. Programmers use tools such as debuggers, logs and tests to locate the problem.
a compiler; compilers* | A compiler is a program that translates source code written in a programming language into machine code that a computer can run directly.
an interpreter | An interpreter is a program that runs source code directly, one statement at a time, without first compiling it into machine code. Python is usually run by an interpreter.
a smartphone; smartphones* | A smartphone is a mobile phone with a touch screen, internet access and apps. It combines a phone, camera, music player and computer in one device.
Wi-Fi; WiFi | Wi-Fi is a wireless technology that connects devices to a local network and to the internet using radio waves.
Bluetooth | Bluetooth is a short-range wireless technology for connecting devices such as headphones, keyboards and phones over a distance of a few meters.
a robot; robots* | A robot is a machine that can sense its surroundings and carry out tasks automatically. Robots are used in factories, hospitals, homes and space exploration.
blockchain; a blockchain | A blockchain is a shared digital ledger made of linked blocks of records. It is very hard to change afterwards and is the basis of cryptocurrencies like Bitcoin.
Bitcoin | Bitcoin is a digital currency created in 2009 that works without a central bank. Its transactions are recorded on a public blockchain.
data science | Data science is the field of extracting knowledge from data using statistics, programming and domain knowledge. Data scientists clean data, analyze it and build models.
statistics | Statistics is the branch of mathematics that collects, analyzes and interprets data. It helps people draw conclusions and make decisions under uncertainty.
a spreadsheet; spreadsheets* | A spreadsheet is a program that organizes data in rows and columns of cells. It can calculate totals, draw charts and analyze numbers. Excel is a well-known example.
email; e-mail | Email is a way to send electronic messages over the internet. Each user has an address, and messages are stored until the recipient reads them.
a pixel; pixels* | A pixel is the smallest dot of color on a digital screen or image. Millions of pixels together form the pictures you see.
binary; the binary number system | Binary is a number system that uses only two digits, 0 and 1. Computers store and process all data in binary.
a byte; a bit | A bit is a single binary digit, 0 or 1, and a byte is a group of eight bits. File sizes are measured in bytes, kilobytes, megabytes and gigabytes.
Docker; a container | Docker is a tool that packages an application with everything it needs into a container. Containers run the same way on any machine.
Kubernetes | Kubernetes is an open-source system for running and managing containers across many machines. It handles deployment, scaling and recovery from failures.
PyTorch | PyTorch is an open-source deep learning library for Python. It provides tensors, automatic differentiation and tools to build and train neural networks.
a tensor; tensors* | In machine learning, a tensor is a multi-dimensional array of numbers. Scalars, vectors and matrices are tensors with zero, one and two dimensions.
quantum computing; a quantum computer | Quantum computing uses quantum bits, or qubits, which can be in a mix of 0 and 1 at the same time. For some problems, quantum computers could be much faster than normal computers.
virtual reality; VR | Virtual reality is a technology that places you inside a computer-generated 3D world, usually with a headset that follows your head movements.
a video game; video games* | A video game is an interactive game played on a computer, console or phone. Players control characters or objects on a screen to reach goals.
the command line; a terminal | The command line is a text interface where you type commands to control a computer. It is powerful for automation and is common on servers.
Unicode | Unicode is a standard that gives every character of every writing system a unique number. UTF-8 is the most common way to store Unicode text.
a search engine; search engines* | A search engine is a website that finds pages on the web that match your words. It indexes pages and ranks the results. Google is the most popular one.
social media | Social media are websites and apps where people share posts, photos and videos and interact with each other. Examples include Instagram, YouTube and TikTok.
an embedding; embeddings* | An embedding is a list of numbers that represents a word, sentence or image. Similar things get similar embeddings, which helps models compare meaning.
a loss function | A loss function measures how far a model's predictions are from the correct answers. Training tries to make the loss as small as possible.
model inference; inference | Inference is using a trained model to make predictions on new input, such as generating a reply to a question. It comes after training.
fine-tuning | Fine-tuning is training an already trained model a little more on a smaller, specific data set. It adapts the model to a new task or style.
a prompt; prompts* | A prompt is the text you give to a language model to tell it what you want. The model continues the prompt or answers it.
recursion | Recursion is when a function calls itself to solve a smaller version of the same problem. It needs a base case so that it stops.
a function in programming | In programming, a function is a named block of code that performs a task. It can take inputs, called arguments, and return a result.
a variable in programming | In programming, a variable is a name that stores a value, such as a number or text. The value can change while the program runs.
object-oriented programming; OOP | Object-oriented programming is a style of programming that organizes code into objects. Objects combine data with the functions that work on that data and are created from classes.
the sun | The sun is the star at the center of our solar system. It is a huge ball of hot hydrogen and helium gas, and its light and heat make life on Earth possible.
the moon | The moon is Earth's only natural satellite. It orbits Earth about once a month, and its gravity causes the ocean tides.
Earth; the Earth; our planet | Earth is the third planet from the sun and the only known planet with life. About seventy percent of its surface is covered by water.
Mars; the planet Mars | Mars is the fourth planet from the sun, often called the Red Planet because of the rusty dust on its surface. It has the largest volcano in the solar system, Olympus Mons.
Jupiter | Jupiter is the largest planet in our solar system, a gas giant made mostly of hydrogen and helium. Its Great Red Spot is a storm bigger than Earth.
Saturn | Saturn is the sixth planet from the sun, a gas giant famous for its bright rings made of ice and rock.
Venus | Venus is the second planet from the sun and the hottest planet in the solar system. Its thick clouds trap heat in a strong greenhouse effect.
the planet Mercury | Mercury is the smallest planet and the closest one to the sun. It has almost no atmosphere, so it is very hot by day and very cold at night.
the solar system | The solar system is the sun and everything that orbits it, including eight planets, their moons, dwarf planets, asteroids and comets.
a star; stars* | A star is a giant ball of hot gas that makes light and heat by nuclear fusion in its core. The sun is the closest star to Earth.
a galaxy; galaxies* | A galaxy is a huge system of stars, gas, dust and dark matter held together by gravity. Our galaxy is the Milky Way.
the Milky Way | The Milky Way is the spiral galaxy that contains our solar system. It has hundreds of billions of stars.
a black hole; black holes* | A black hole is a region of space where gravity is so strong that nothing, not even light, can escape. Many form when very large stars collapse.
the universe | The universe is all of space and time and everything in it, including galaxies, stars, planets and energy. It began with the Big Bang about 13.8 billion years ago.
the Big Bang | The Big Bang is the scientific theory that the universe began about 13.8 billion years ago from an extremely hot and dense state and has been expanding ever since.
a comet; comets* | A comet is a small icy body that orbits the sun. When it comes close to the sun, it heats up and forms a glowing tail of gas and dust.
an asteroid; asteroids* | An asteroid is a rocky object that orbits the sun and is much smaller than a planet. Most asteroids are found in the asteroid belt between Mars and Jupiter.
gravity | Gravity is the force that pulls objects with mass toward each other. It keeps us on the ground, keeps the moon in orbit around Earth and holds galaxies together.
photosynthesis | Photosynthesis is the process plants use to turn sunlight, water and carbon dioxide into sugar and oxygen. It happens in the chloroplasts of green leaves.
DNA | DNA is the molecule that carries the genetic instructions of living things. It has a double helix shape and is built from four bases: A, T, C and G.
a cell; cells* | A cell is the smallest unit of life. All living things are made of cells, and each cell has a membrane, genetic material and many tiny parts that keep it alive.
evolution | Evolution is the change in living things over many generations. Through natural selection, traits that help survival and reproduction become more common.
an atom; atoms* | An atom is the basic building block of matter. It has a nucleus of protons and neutrons surrounded by electrons.
an electron; electrons* | An electron is a tiny particle with a negative electric charge that moves around the nucleus of an atom. Flowing electrons make electric current.
a molecule; molecules* | A molecule is a group of two or more atoms held together by chemical bonds. A water molecule, for example, has two hydrogen atoms and one oxygen atom.
water | Water is a clear liquid made of hydrogen and oxygen, with the formula H2O. It covers most of Earth's surface and is essential for all known life.
oxygen | Oxygen is a chemical element and a gas that makes up about twenty-one percent of the air. Humans and animals need it to breathe.
carbon dioxide; CO2 | Carbon dioxide is a gas made of one carbon atom and two oxygen atoms. Animals breathe it out, plants use it for photosynthesis, and it is a major greenhouse gas.
hydrogen | Hydrogen is the lightest and most common chemical element in the universe. Stars like the sun are made mostly of hydrogen.
electricity | Electricity is the flow of electric charge, usually electrons moving through a wire. It powers lights, computers and many machines.
a magnet; magnetism | A magnet is an object that creates a magnetic field and attracts iron. Magnetism is closely related to electricity, and Earth itself acts like a giant magnet.
light | Light is a form of energy that travels as electromagnetic waves. Visible light is the part our eyes can see, and it travels at about 300,000 kilometers per second.
the speed of light | The speed of light in a vacuum is about 300,000 kilometers per second. Nothing can travel faster than light.
sound | Sound is a vibration that travels as a wave through air, water or solids. Our ears detect these vibrations and the brain hears them as sound.
energy | Energy is the ability to do work or cause change. It comes in forms such as heat, light, motion and electricity, and it is never created or destroyed, only converted.
physics | Physics is the science of matter, energy, motion and forces. It explains everything from tiny particles to planets and galaxies.
chemistry | Chemistry is the science of substances, what they are made of and how they react and change. It studies atoms, molecules and chemical reactions.
biology | Biology is the science of living things. It studies cells, plants, animals, genes and how life works and evolves.
mathematics; math | Mathematics is the study of numbers, quantities, shapes and patterns. It uses logic and proofs and is the language of science and engineering.
algebra | Algebra is a branch of mathematics that uses letters and symbols to stand for numbers in equations. It helps solve problems with unknown values.
geometry | Geometry is the branch of mathematics about shapes, sizes, angles and space, such as points, lines, triangles and circles.
calculus | Calculus is the branch of mathematics that studies change. Derivatives measure rates of change, and integrals add up small pieces to find areas and totals.
a prime number; prime numbers* | A prime number is a whole number greater than one that can be divided evenly only by one and itself. Examples are 2, 3, 5, 7 and 11.
pi; the number pi | Pi is the ratio of a circle's circumference to its diameter. It is about 3.14159, and its digits go on forever without repeating.
climate change; global warming | Climate change is the long-term warming of Earth's climate, mainly caused by burning fossil fuels that release greenhouse gases. It leads to rising seas and more extreme weather.
the greenhouse effect | The greenhouse effect is the warming of Earth's surface because gases like carbon dioxide and water vapor trap heat in the atmosphere.
weather; the weather | Weather is the state of the air at a certain place and time, including temperature, wind, clouds, rain and snow.
climate | Climate is the typical weather of a region averaged over many years. Deserts have a dry climate, and rainforests have a warm, wet climate.
rain | Rain is water that falls from clouds as drops. It forms when water vapor in the air cools, condenses into droplets and they grow heavy enough to fall.
snow | Snow is frozen precipitation made of ice crystals that form in cold clouds. Snowflakes usually have a six-sided shape.
a rainbow; rainbows* | A rainbow is an arc of colors in the sky. It appears when sunlight is bent and split into its colors by raindrops.
a cloud; clouds* | A cloud is a visible mass of tiny water droplets or ice crystals floating in the air. Clouds form when warm, moist air rises and cools.
lightning; thunder | Lightning is a giant electric spark between clouds or between a cloud and the ground. Thunder is the sound made when lightning suddenly heats the air.
a hurricane; hurricanes* | A hurricane is a huge, powerful storm that forms over warm ocean water, with strong winds spinning around a calm center called the eye.
a tornado; tornadoes* | A tornado is a rapidly spinning column of air that reaches from a thunderstorm down to the ground. Its winds can be extremely strong.
an earthquake; earthquakes* | An earthquake is a sudden shaking of the ground caused by the movement of tectonic plates along faults in Earth's crust.
a volcano; volcanoes* | A volcano is an opening in Earth's crust where melted rock, gas and ash escape. Melted rock underground is called magma, and when it reaches the surface it is called lava.
plate tectonics | Plate tectonics is the theory that Earth's outer shell is broken into large plates that slowly move. Their movement causes earthquakes, volcanoes and mountains.
the ocean; oceans* | The ocean is the huge body of salt water that covers about seventy percent of Earth. The five oceans are the Pacific, Atlantic, Indian, Southern and Arctic.
the atmosphere | The atmosphere is the layer of gases surrounding Earth. It is mostly nitrogen and oxygen, protects us from harmful radiation and creates our weather.
the water cycle | The water cycle is the continuous movement of water on Earth. Water evaporates, forms clouds, falls as rain or snow and flows back to the sea.
a vaccine; vaccines* | A vaccine is a medicine that trains the immune system to recognize a germ, so the body can fight it quickly in the future. Vaccines prevent many serious diseases.
the immune system | The immune system is the body's defense against germs such as bacteria and viruses. It includes white blood cells, antibodies and organs like the spleen.
bacteria* | Bacteria are tiny single-celled living things found almost everywhere. Many are harmless or helpful, like those in our gut, but some cause diseases.
a virus; viruses* | A virus is a tiny germ that can only multiply inside the cells of a living host. Viruses cause illnesses such as the flu and the common cold.
antibiotics* | Antibiotics are medicines that kill bacteria or stop them from growing. They do not work against viruses, and overusing them makes bacteria resistant.
the heart; the human heart | The heart is a muscular organ that pumps blood through the body. It beats about 100,000 times a day, delivering oxygen and nutrients.
the brain; the human brain | The brain is the organ that controls the body and is the center of thought, memory and feeling. It has about 86 billion neurons.
blood | Blood is the red fluid that flows through the body's vessels. It carries oxygen, nutrients and immune cells and removes waste.
the lungs* | The lungs are the organs we breathe with. They take oxygen from the air into the blood and remove carbon dioxide.
the skeleton; bones* | The human skeleton is the frame of bones that supports the body, protects the organs and lets us move. An adult has 206 bones.
muscles* | Muscles are tissues that contract to move the body. Skeletal muscles move the bones, and the heart is also a muscle.
the liver | The liver is a large organ that cleans the blood, stores energy and makes bile to help digest fats.
skin; the skin | Skin is the body's largest organ. It protects us from germs, keeps water in and helps control body temperature.
the eye; eyes* | The eye is the organ of sight. Light enters through the pupil, the lens focuses it onto the retina, and the brain turns the signals into images.
teeth* | Teeth are hard structures in the mouth used to bite and chew food. Brushing twice a day and eating less sugar keep them healthy.
sleep | Sleep is a natural state of rest in which the body and brain recover. Adults usually need seven to nine hours of sleep a night.
exercise | Exercise is physical activity that keeps the body fit and healthy. Regular exercise strengthens the heart and muscles and improves mood.
a healthy diet; nutrition | A healthy diet includes plenty of vegetables, fruit, whole grains and protein, with little sugar and processed food. It gives the body the nutrients it needs.
vitamins* | Vitamins are nutrients the body needs in small amounts to work properly. For example, vitamin C supports the immune system and vitamin D helps build strong bones.
protein | Protein is a nutrient made of amino acids that the body uses to build and repair muscles and tissues. Meat, fish, eggs, beans and nuts are rich in protein.
a calorie; calories* | A calorie is a unit of energy. In nutrition it tells how much energy a food gives the body.
stress | Stress is the body's reaction to pressure or challenges. A little can help you focus, but long-term stress harms health. Sleep, exercise and rest help reduce it.
meditation | Meditation is a practice of focusing the mind, often on the breath, to become calm and aware. It can reduce stress and improve concentration.
the flu; influenza | The flu is a contagious illness caused by influenza viruses. It causes fever, cough, sore throat and tiredness, and a yearly vaccine helps prevent it.
the common cold; a cold | The common cold is a mild viral infection of the nose and throat. It causes sneezing, a runny nose and a sore throat and usually goes away in about a week.
diabetes | Diabetes is a disease in which blood sugar levels stay too high because the body does not make enough insulin or cannot use it well.
a dinosaur; dinosaurs* | Dinosaurs were reptiles that lived on Earth for about 165 million years. Most died out about 66 million years ago after an asteroid impact, but birds are their living descendants.
fossils*; a fossil | Fossils are the preserved remains or traces of ancient living things, usually found in rock. They help scientists learn about life in the past.
a gene; genes* | A gene is a section of DNA that holds the instructions for making a protein or a trait. Genes are passed from parents to children.
an ecosystem; ecosystems* | An ecosystem is a community of living things together with their environment, such as a forest, lake or coral reef. All its parts depend on each other.
a food chain | A food chain shows who eats whom in nature. Energy passes from plants to plant eaters and then to meat eaters.
renewable energy | Renewable energy comes from sources that are naturally replaced, such as sunlight, wind, water and heat from inside the Earth. It produces little pollution.
solar power; solar energy; solar panels* | Solar power is electricity made from sunlight, usually with solar panels. The panels contain cells that turn light directly into electric current.
wind power; wind turbines* | Wind power is electricity made by wind turbines. The wind turns their large blades, which spin a generator.
nuclear power; nuclear energy | Nuclear power makes electricity from the heat released when uranium atoms split inside a reactor. It produces very little carbon dioxide.
fossil fuels* | Fossil fuels are coal, oil and natural gas, formed from ancient plants and animals over millions of years. Burning them releases energy and carbon dioxide.
recycling | Recycling is turning used materials such as paper, glass, metal and plastic into new products. It saves resources and reduces waste.
plastic | Plastic is a light, cheap material made mostly from oil. It is used in packaging and countless products, but plastic waste pollutes the oceans and lasts for centuries.
pollution; air pollution | Pollution is harmful material in the air, water or soil, often from factories, cars and waste. It damages health and nature.
temperature | Temperature measures how hot or cold something is. It is measured in degrees Celsius, degrees Fahrenheit or kelvin.
a microscope; microscopes* | A microscope is an instrument that makes tiny objects look much larger. It lets scientists see cells, bacteria and other things too small for the eye.
a telescope; telescopes* | A telescope is an instrument that collects light to make distant objects, such as planets and stars, look closer and brighter.
a solar eclipse; an eclipse | A solar eclipse happens when the moon passes between the sun and Earth and blocks the sunlight. In a lunar eclipse, Earth's shadow falls on the moon.
the seasons* | Seasons happen because Earth's axis is tilted. As Earth orbits the sun, each half of the planet gets more direct sunlight in summer and less in winter.
NASA | NASA is the space agency of the United States. It runs space missions, sent astronauts to the moon with Apollo and operates telescopes like Hubble and James Webb.
an astronaut; astronauts* | An astronaut is a person trained to travel and work in space. Astronauts live on the International Space Station for months at a time.
the International Space Station; the ISS | The International Space Station is a large laboratory orbiting Earth about 400 kilometers up. Astronauts from many countries live and do experiments there.
a rocket; rockets* | A rocket is a vehicle that flies by pushing hot gas out of its engine at high speed. Rockets carry satellites and astronauts into space.
a satellite; satellites* | A satellite is an object that orbits a planet. The moon is a natural satellite, and artificial satellites are used for communication, weather forecasts and GPS.
GPS | GPS, the Global Positioning System, uses signals from satellites to find your exact location on Earth. Phones and cars use it for navigation.
the Moon landing | The first Moon landing was on July 20, 1969, when Neil Armstrong and Buzz Aldrin of NASA's Apollo 11 mission walked on the moon.
the theory of relativity; relativity | The theory of relativity, developed by Albert Einstein, says that space and time are linked and that gravity is the bending of spacetime by mass.
quantum mechanics; quantum physics | Quantum mechanics is the branch of physics that describes very small particles like atoms and electrons. At that scale, energy comes in small packets and particles also behave like waves.
friction | Friction is the force that resists motion when two surfaces rub against each other. It lets us walk and helps cars brake, but it also produces heat.
an engine; engines* | An engine is a machine that turns energy, often from burning fuel, into motion. Car engines burn gasoline or diesel to turn the wheels.
a cat; cats* | The cat is a small, furry pet and skilled hunter. Cats are independent, sleep a lot, purr when content and have lived with people for thousands of years.
a dog; dogs* | The dog is a loyal domesticated animal descended from wolves. Dogs are kept as pets and help people by herding, guarding and guiding.
a horse; horses* | A horse is a large, strong and fast animal with hooves and a mane. People have ridden horses and used them for work for thousands of years.
an elephant; elephants* | The elephant is the largest land animal. It has a long trunk, big ears and tusks, and it lives in Africa and Asia.
a lion; lions* | The lion is a big wild cat that lives in groups called prides, mostly in Africa. Males have a thick mane, and lions are often called the king of the jungle.
a tiger; tigers* | The tiger is the largest wild cat, with orange fur and black stripes. It lives in the forests of Asia and is an endangered species.
a whale; whales* | Whales are huge marine mammals that breathe air through a blowhole. The blue whale is the largest animal that has ever lived.
a dolphin; dolphins* | Dolphins are intelligent marine mammals that live in groups. They communicate with clicks and whistles and use echolocation to find food.
a shark; sharks* | Sharks are fish with skeletons made of cartilage and many rows of sharp teeth. They have lived in the oceans for more than 400 million years.
a bird; birds* | Birds are warm-blooded animals with feathers, wings and beaks that lay eggs. Most birds can fly.
a penguin; penguins* | Penguins are birds that cannot fly but are excellent swimmers. Most of them live in the Southern Hemisphere, especially around Antarctica.
an eagle; eagles* | The eagle is a large bird of prey with sharp eyesight, a hooked beak and strong talons. It hunts fish and small animals.
an owl; owls* | The owl is a bird of prey that mostly hunts at night. It has large eyes, flies silently and can turn its head very far.
a bee; bees* | Bees are flying insects that collect nectar and pollen from flowers. They pollinate many crops, and honey bees make honey and wax.
an ant; ants* | Ants are small insects that live in large organized colonies with a queen. They work together to find food and build nests.
a butterfly; butterflies* | A butterfly is an insect with large colorful wings. It starts life as a caterpillar and changes into a butterfly inside a chrysalis.
a spider; spiders* | Spiders are small animals with eight legs. Most of them spin silk webs to catch insects. They are arachnids, not insects.
a snake; snakes* | Snakes are long reptiles without legs. They smell with their tongues, and some of them are venomous.
a frog; frogs* | Frogs are amphibians that start life as tadpoles in water and grow legs as adults. They have smooth skin and strong legs for jumping.
a turtle; turtles* | Turtles are reptiles with a hard shell that protects their body. Some live on land, some in fresh water and some in the sea, and many live very long.
fish*; a fish | Fish are animals that live in water, breathe with gills and usually have fins and scales. There are more than 30,000 kinds of fish.
a mammal; mammals* | Mammals are warm-blooded animals with hair or fur that feed their young with milk. Humans, dogs, whales and bats are mammals.
a cow; cows* | Cows are large farm animals raised for milk, meat and leather. They eat grass and have a stomach with four compartments.
a chicken; chickens* | Chickens are farm birds raised for their eggs and meat. They descend from wild jungle birds of Asia.
a panda; pandas*; the giant panda | The giant panda is a black and white bear from the mountains of China. It eats mostly bamboo and spends many hours a day feeding.
a monkey; monkeys* | Monkeys are primates that live mostly in tropical forests. They are clever, social animals, and many have long tails for climbing.
a bat; bats* | Bats are the only mammals that can truly fly. Many of them hunt insects at night using echolocation.
a kangaroo; kangaroos* | The kangaroo is an Australian mammal that hops on its strong back legs. Females carry their babies, called joeys, in a pouch.
a tree; trees* | A tree is a tall plant with a woody trunk, branches and leaves. Trees produce oxygen, store carbon and give homes to many animals.
a flower; flowers* | A flower is the part of many plants that makes seeds. Its colors and scent attract bees and other pollinators.
a forest; forests* | A forest is a large area covered mostly with trees. Forests shelter wildlife, clean the air and store large amounts of carbon.
the Amazon rainforest; a rainforest | The Amazon rainforest is the largest tropical rainforest in the world, covering much of South America. It is home to millions of species.
a desert; deserts* | A desert is a region that receives very little rain. Deserts can be hot like the Sahara or cold like Antarctica.
a mountain; mountains* | A mountain is a large landform that rises high above its surroundings. Mountains form when tectonic plates collide or volcanoes erupt.
a river; rivers* | A river is a natural stream of fresh water that flows toward a sea, a lake or another river. Rivers supply water for drinking, farming and transport.
mushrooms*; a mushroom | Mushrooms are the fruiting bodies of fungi. Some are tasty foods, but others are very poisonous.
coffee | Coffee is a drink made from roasted and ground coffee beans brewed with hot water. It contains caffeine, which helps people feel awake.
tea | Tea is a drink made by pouring hot water over the dried leaves of the tea plant. Green, black and oolong tea all come from the same plant.
caffeine | Caffeine is a natural stimulant found in coffee, tea and chocolate. It makes you feel more alert, but too much can disturb your sleep.
chocolate | Chocolate is a sweet food made from roasted cacao beans, usually mixed with sugar and milk. Dark chocolate has more cacao and less sugar.
bread | Bread is a baked food made from flour, water and usually yeast. It is one of the oldest and most common foods in the world.
pizza | Pizza is an Italian dish of flat dough topped with tomato sauce, cheese and other toppings and baked in a hot oven.
pasta | Pasta is an Italian food made from wheat flour and water or eggs. It comes in shapes like spaghetti and penne and is boiled before eating.
rice | Rice is the seed of a grass plant and a staple food for more than half of the people in the world, especially in Asia.
cheese | Cheese is a food made from milk that is curdled, pressed and often aged. There are thousands of kinds, such as cheddar, brie and mozzarella.
milk | Milk is a white liquid produced by mammals to feed their young. Cow's milk is a common drink and is rich in calcium and protein.
eggs*; an egg | Eggs are laid by birds and some other animals. Chicken eggs are a cheap and nutritious food rich in protein.
an apple; apples* | An apple is a round fruit that grows on trees, with red, green or yellow skin. Apples are crunchy, sweet and rich in fiber.
a banana; bananas* | A banana is a long curved fruit with a yellow peel and soft, sweet flesh. It is a good source of potassium.
an orange; oranges* | An orange is a round citrus fruit with a thick peel and juicy segments. It is rich in vitamin C.
a tomato; tomatoes* | A tomato is a red, juicy fruit that is usually eaten as a vegetable. It is used in salads, sauces and soups.
vegetables* | Vegetables are the edible parts of plants such as leaves, roots and stems, like carrots, spinach and broccoli. They are rich in vitamins, minerals and fiber.
fruit | Fruit is the sweet, fleshy part of a plant that holds the seeds. Apples, bananas and berries are common fruits and provide vitamins and fiber.
sugar | Sugar is a sweet substance made mostly from sugar cane or sugar beets. It gives quick energy, but eating too much is bad for your teeth and health.
salt | Salt is a mineral made of sodium chloride. It is used to season and preserve food, and the body needs a small amount of it.
honey | Honey is a sweet, thick liquid made by bees from flower nectar. It can last for a very long time without spoiling.
ice cream | Ice cream is a frozen dessert made from milk or cream, sugar and flavors like vanilla or chocolate.
soup | Soup is a warm liquid food made by cooking vegetables, meat or fish in water or broth.
a sandwich; sandwiches* | A sandwich is food such as cheese, meat or vegetables placed between two slices of bread. It is a quick and popular meal.
sushi | Sushi is a Japanese dish of vinegared rice combined with raw fish, seafood or vegetables, often wrapped in seaweed.
breakfast | Breakfast is the first meal of the day, eaten in the morning. Common breakfast foods include bread, eggs, cereal, fruit and coffee.
cooking | Cooking is preparing food by heating it, for example by boiling, frying, baking or grilling. It makes food tasty, safe and easier to digest.
baking | Baking is cooking food with dry heat in an oven. Bread, cakes, cookies and pies are baked.
a recipe; recipes* | A recipe is a set of instructions for making a dish. It lists the ingredients, their amounts and the steps to follow.
wine | Wine is an alcoholic drink made from fermented grapes. Red wine is made with dark grapes and their skins, and white wine usually without the skins.
beer | Beer is an alcoholic drink made by brewing and fermenting grains such as barley, flavored with hops.
a bicycle; bicycles*; a bike; bikes* | A bicycle is a vehicle with two wheels that you move by pushing the pedals. Cycling is a healthy, cheap and clean way to travel.
a car; cars* | A car is a road vehicle with four wheels and an engine or electric motor that carries a few people. Cars changed how people live and travel.
an electric car; electric cars* | An electric car is powered by a battery and an electric motor instead of a gasoline engine. It produces no exhaust and is charged from the power grid.
a train; trains* | A train is a line of connected railway cars pulled along tracks by a locomotive. Trains carry passengers and freight over long distances.
an airplane; airplanes*; a plane | An airplane is a powered flying vehicle with fixed wings. Its wings create lift as air flows over them, and jet engines or propellers push it forward.
a ship; ships*; a boat | A ship is a large vessel that travels on the sea, carrying passengers or cargo. Smaller vessels are usually called boats.
a battery; batteries* | A battery stores chemical energy and releases it as electricity. Rechargeable lithium-ion batteries power phones, laptops and electric cars.
a book; books* | A book is a written work of pages bound together or read on a screen. Books share stories, knowledge and ideas.
reading | Reading is looking at written words and understanding them. It builds knowledge, vocabulary and imagination.
a library; libraries* | A library is a place that collects books and other media for people to borrow or read. Many libraries also offer computers and quiet space to study.
music | Music is the art of arranging sounds in time with melody, rhythm and harmony. People make it with their voices and with instruments.
a piano; the piano | The piano is a keyboard instrument. Pressing a key makes a small hammer strike a string to play a note.
a guitar; the guitar | The guitar is a string instrument, usually with six strings, played by plucking or strumming. It is common in rock, pop, folk and classical music.
the violin; a violin | The violin is a small string instrument played with a bow. It has four strings and a bright, expressive sound.
painting | Painting is the art of putting paint on a surface such as canvas or paper to create pictures. Famous painters include Leonardo da Vinci and Vincent van Gogh.
photography | Photography is the art of capturing images with a camera by recording light. Today most photos are taken with digital cameras and phones.
a camera; cameras* | A camera is a device that records images by capturing light through a lens onto a sensor or film.
a movie; movies*; a film | A movie is a story told with moving pictures and sound. Movies are shown in cinemas, on television and on streaming services.
poetry; a poem | Poetry is a form of writing that uses rhythm, sound and imagery to express feelings and ideas. A poem is usually written in lines and verses.
football; soccer | Football, also called soccer, is a team sport in which two teams of eleven players try to kick a ball into the other team's goal. It is the most popular sport in the world.
basketball | Basketball is a team sport in which two teams of five players score points by throwing a ball through a hoop ten feet above the floor.
tennis | Tennis is a racket sport for two or four players who hit a ball over a net. A point is won when the other side cannot return the ball.
chess | Chess is a strategy board game for two players on a board of 64 squares. Each player has sixteen pieces, and the goal is to checkmate the other king.
swimming | Swimming is moving through water using your arms and legs. It is a great full-body exercise and an important safety skill.
running; jogging | Running is a form of exercise in which you move quickly on foot. It strengthens the heart and lungs and can be done almost anywhere.
yoga | Yoga is a practice from India that combines body postures, breathing and meditation. It improves flexibility, strength and calm.
the Olympic Games; the Olympics* | The Olympic Games are an international sports event held every four years, in summer and winter versions. Athletes from around the world compete for medals.
a marathon; marathons* | A marathon is a long-distance running race of about 42.2 kilometers. It is named after the legend of a Greek messenger who ran from Marathon to Athens.
gardening | Gardening is growing plants such as flowers, vegetables and herbs. It needs soil, water, sunlight and patience.
money | Money is anything widely accepted to pay for goods and services, such as coins, banknotes and digital balances. It also stores value and measures prices.
a bank; banks* | A bank is a financial institution that keeps people's money safe, makes loans and handles payments.
inflation | Inflation is the general rise in prices over time, which means money buys less than before. Central banks try to keep it low and stable.
economics; the economy | Economics is the study of how people, businesses and governments use limited resources to produce and trade goods and services.
the stock market; stocks* | The stock market is where people buy and sell shares of companies. A share is a small piece of ownership in a company.
democracy | Democracy is a system of government in which citizens choose their leaders by voting in free elections.
a government; governments* | A government is the group of people and institutions that runs a country or region, makes laws and provides public services.
history | History is the study of past events, people and societies. Historians use documents, objects and other evidence to understand what happened.
philosophy | Philosophy is the study of basic questions about knowledge, reality, truth, right and wrong, and the mind. Famous philosophers include Socrates, Plato and Kant.
psychology | Psychology is the scientific study of the mind and behavior. It looks at how people think, feel, learn and relate to others.
a language; languages* | A language is a system of words and rules that people use to communicate. There are about 7,000 languages in the world.
English; the English language | English is a language that started in England and is now spoken around the world. It is the most widely used language for business, science and the internet.
writing | Writing is representing language with symbols such as letters. It lets people record ideas and share them across time and distance.
the alphabet; an alphabet | An alphabet is a set of letters used to write a language. The English alphabet has 26 letters, from A to Z.
school | School is a place where children and young people learn reading, writing, mathematics, science and many other subjects from teachers.
a university; universities* | A university is a school for higher education and research. Students study there for degrees such as a bachelor's or a master's degree.
friendship | Friendship is a close relationship between people who like, trust and support each other.
a family; families* | A family is a group of people related by birth, marriage or adoption who often live together and care for each other.
happiness | Happiness is a feeling of joy, satisfaction and well-being. Good relationships, health and meaningful work contribute to it.
time | Time is the ongoing sequence of events from the past through the present to the future. We measure it in seconds, minutes, hours, days and years.
a calendar; calendars* | A calendar is a system for organizing days into weeks, months and years. Most of the world uses the Gregorian calendar, with 365 days in a normal year.
a house; houses* | A house is a building where people live. It gives shelter, warmth and a place to rest with family.
a city; cities* | A city is a large town where many people live and work close together. Cities have many buildings, roads, shops and public services.
Paris | Paris is the capital of France, known for the Eiffel Tower, the Louvre museum, art, fashion and food.
London | London is the capital of the United Kingdom and lies on the River Thames. It is known for Big Ben, Buckingham Palace and its museums.
New York City; New York | New York City is the largest city in the United States. It is famous for Manhattan, the Statue of Liberty, Central Park and Broadway.
Tokyo | Tokyo is the capital of Japan and one of the largest cities in the world. It mixes modern skyscrapers with old temples.
Berlin | Berlin is the capital of Germany. It is known for its history, the Brandenburg Gate, the remains of the Berlin Wall and its culture.
Rome | Rome is the capital of Italy and was the center of the ancient Roman Empire. It is home to the Colosseum, and Vatican City lies inside it.
France | France is a country in Western Europe with Paris as its capital. It is famous for its food, wine, art and the Eiffel Tower.
Germany | Germany is a country in central Europe with Berlin as its capital. It is known for its engineering, cars, history and bread.
Japan | Japan is an island country in East Asia with Tokyo as its capital. It is known for its technology, anime, sushi and old temples.
China | China is a large country in East Asia with one of the largest populations in the world. Its capital is Beijing, and its history goes back thousands of years.
India | India is a large country in South Asia with one of the largest populations in the world. Its capital is New Delhi, and it is known for its many cultures, languages and foods.
the United States; the USA; America | The United States is a large country in North America made up of fifty states. Its capital is Washington, D.C., and its largest city is New York.
Canada | Canada is a large country in North America and the second largest in the world by area. Its capital is Ottawa, and it is known for forests, lakes and cold winters.
Brazil | Brazil is the largest country in South America. Its capital is Brasilia, its people speak Portuguese, and it contains much of the Amazon rainforest.
Australia | Australia is a country and a continent in the Southern Hemisphere. Its capital is Canberra, and it is known for kangaroos, koalas and the Great Barrier Reef.
Africa | Africa is the second largest continent, with more than fifty countries. It has the Sahara desert, the Nile river and a huge variety of wildlife.
Europe | Europe is a continent with about fifty countries, including France, Germany, Italy and Spain. Many of them are members of the European Union.
Asia | Asia is the largest and most populous continent. It includes China, India and Japan and the Himalaya mountains.
Antarctica | Antarctica is the icy continent around the South Pole. It is the coldest, windiest and driest continent, and no one lives there permanently.
the Eiffel Tower | The Eiffel Tower is an iron tower in Paris, built for the 1889 World's Fair. It is about 330 meters tall and one of the most visited monuments in the world.
the Great Wall of China | The Great Wall of China is a series of walls built over many centuries to protect northern China. It is thousands of kilometers long.
the pyramids of Egypt; the pyramids* | The pyramids of Egypt are huge stone tombs built for pharaohs more than 4,000 years ago. The Great Pyramid of Giza is the largest.
Mount Everest | Mount Everest is the highest mountain on Earth, about 8,849 meters above sea level. It is in the Himalayas on the border of Nepal and China.
the Sahara; the Sahara desert | The Sahara is the largest hot desert in the world and covers much of North Africa.
the Pacific Ocean | The Pacific Ocean is the largest and deepest ocean on Earth. It lies between Asia and Australia on one side and the Americas on the other.
the Nile | The Nile is a river in northeastern Africa and one of the longest rivers in the world. It flows north through Egypt into the Mediterranean Sea.
the printing press | The printing press is a machine for printing text, developed by Johannes Gutenberg around 1440. It made books cheaper and helped spread knowledge.
the wheel | The wheel is one of the most important human inventions, first used more than 5,000 years ago. It made carts, machines and modern vehicles possible.
the telephone; a telephone | The telephone is a device for talking with people far away. Alexander Graham Bell received a patent for it in 1876.
a light bulb; light bulbs* | A light bulb makes light from electricity. Old bulbs heat a thin wire until it glows, while modern LED bulbs use much less energy.
a refrigerator; a fridge | A refrigerator is an appliance that keeps food cold by pumping heat out of its inside. Cold slows the growth of bacteria, so food lasts longer.
a microwave oven; a microwave | A microwave oven heats food with microwaves, which make the water molecules in the food move faster and warm up.
an umbrella; umbrellas* | An umbrella is a folding canopy on a stick that protects you from rain or sun.
paper | Paper is a thin material made from wood pulp or other plant fibers. It is used for writing, printing, packaging and cleaning.
glass | Glass is a hard, clear material made by melting sand with other minerals and cooling it. It is used for windows, bottles and lenses.
steel | Steel is a strong metal made mostly of iron with a small amount of carbon. It is used in buildings, bridges, cars and tools.
gold | Gold is a shiny yellow precious metal that does not rust. It is used in jewelry, coins and electronics.
a map; maps* | A map is a drawing of an area that shows places, roads and features such as rivers and mountains. It helps people find their way.
a pandemic; pandemics* | A pandemic is an outbreak of a disease that spreads across many countries and affects many people, such as the COVID-19 pandemic.
"""

# People use "Who was X?"-style questions: "name[; alias...] | answer".
PEOPLE = """
Albert Einstein; Einstein | Albert Einstein was a physicist famous for the theory of relativity and the equation E = mc2. He won the Nobel Prize in Physics in 1921.
Isaac Newton; Newton | Isaac Newton was an English scientist who described the laws of motion and universal gravity. He also helped invent calculus.
Marie Curie | Marie Curie was a scientist who studied radioactivity and discovered the elements polonium and radium. She was the first person to win two Nobel Prizes.
Charles Darwin; Darwin | Charles Darwin was an English naturalist who developed the theory of evolution by natural selection, described in his 1859 book On the Origin of Species.
William Shakespeare; Shakespeare | William Shakespeare was an English playwright and poet, often called the greatest writer in the English language. He wrote Hamlet, Romeo and Juliet and Macbeth.
Leonardo da Vinci | Leonardo da Vinci was an Italian Renaissance artist and inventor. He painted the Mona Lisa and filled notebooks with ideas for machines.
Alan Turing; Turing | Alan Turing was a British mathematician and a founder of computer science. He described the Turing machine and helped break German codes in World War II.
Ada Lovelace | Ada Lovelace was an English mathematician who wrote about Charles Babbage's Analytical Engine in the 1840s. She is often called the first computer programmer.
Galileo Galilei; Galileo | Galileo Galilei was an Italian astronomer and physicist. He improved the telescope, discovered four moons of Jupiter and supported the idea that Earth orbits the sun.
Mozart; Wolfgang Amadeus Mozart | Wolfgang Amadeus Mozart was an Austrian composer of the classical era who wrote more than 600 works, including symphonies, operas and piano concertos.
Neil Armstrong | Neil Armstrong was an American astronaut and the first person to walk on the moon, on July 20, 1969, during the Apollo 11 mission.
Linus Torvalds | Linus Torvalds is a Finnish-American software engineer who created the Linux kernel in 1991 and the Git version control system in 2005.
Guido van Rossum | Guido van Rossum is a Dutch programmer who created the Python programming language, first released in 1991.
"""

# Direct questions with fixed answers: "question | question | ... || answer".
DIRECT = """
What is the capital of France? | What's the capital of France? | Which city is the capital of France? || The capital of France is Paris.
What is the capital of Germany? | What's the capital of Germany? | Which city is the capital of Germany? || The capital of Germany is Berlin.
What is the capital of Japan? | What's the capital of Japan? | Which city is the capital of Japan? || The capital of Japan is Tokyo.
What is the capital of Italy? | What's the capital of Italy? | Which city is the capital of Italy? || The capital of Italy is Rome.
What is the capital of the United Kingdom? | What's the capital of England? | What is the capital of the UK? || The capital of the United Kingdom is London.
What is the capital of Spain? | What's the capital of Spain? | Which city is the capital of Spain? || The capital of Spain is Madrid.
What is the capital of China? | What's the capital of China? | Which city is the capital of China? || The capital of China is Beijing.
What is the capital of the United States? | What's the capital of the USA? | What is the capital of America? || The capital of the United States is Washington, D.C.
What is the capital of Canada? | What's the capital of Canada? | Which city is the capital of Canada? || The capital of Canada is Ottawa.
What is the capital of Australia? | What's the capital of Australia? | Which city is the capital of Australia? || The capital of Australia is Canberra.
Why is the sky blue? | Why is the sky blue during the day? | What makes the sky blue? || The sky looks blue because air molecules scatter blue sunlight much more than red light, so blue light reaches our eyes from every direction.
How far away is the moon? | How far is the moon from Earth? | What is the distance to the moon? || The moon is about 384,000 kilometers away from Earth on average.
How far away is the sun? | How far is the sun from Earth? | What is the distance to the sun? || The sun is about 150 million kilometers away from Earth. Its light takes about eight minutes to reach us.
How hot is the sun? | What is the temperature of the sun? | How hot is the surface of the sun? || The surface of the sun is about 5,500 degrees Celsius, and its core is about 15 million degrees Celsius.
How many planets are in the solar system? | How many planets are there? | How many planets orbit the sun? || There are eight planets in the solar system: Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus and Neptune.
How many days are in a year? | How many days does a year have? | How long is a year? || A normal year has 365 days, and a leap year has 366 days.
How many continents are there? | How many continents does Earth have? | What are the continents? || There are seven continents: Africa, Antarctica, Asia, Australia, Europe, North America and South America.
How many legs does a spider have? | How many legs do spiders have? || A spider has eight legs.
How many legs does an insect have? | How many legs do insects have? || An insect has six legs.
What is 2 plus 2? | What is 2 + 2? | How much is two plus two? || 2 plus 2 equals 4.
What is 10 times 10? | What is 10 * 10? | How much is ten times ten? || 10 times 10 equals 100.
At what temperature does water boil? | What is the boiling point of water? | When does water boil? || At sea level, water boils at 100 degrees Celsius, which is 212 degrees Fahrenheit.
At what temperature does water freeze? | What is the freezing point of water? | When does water freeze? || Water freezes at 0 degrees Celsius, which is 32 degrees Fahrenheit.
Who invented the telephone? | Who made the first telephone? || Alexander Graham Bell received the first patent for the telephone in 1876.
Who invented the light bulb? | Who made the first light bulb? || Thomas Edison made the first practical and long-lasting light bulb in 1879, building on the work of earlier inventors.
Who created Python? | Who invented Python? | Who made the Python language? || Python was created by Guido van Rossum and first released in 1991.
Who created Linux? | Who invented Linux? | Who made Linux? || Linux was created by Linus Torvalds, who released the first version in 1991.
What is the largest planet? | Which planet is the biggest? | What is the biggest planet in the solar system? || Jupiter is the largest planet in the solar system.
What is the largest ocean? | Which ocean is the biggest? | What is the biggest ocean on Earth? || The Pacific Ocean is the largest and deepest ocean on Earth.
What is the tallest mountain? | Which mountain is the highest? | What is the highest mountain in the world? || Mount Everest is the highest mountain on Earth, about 8,849 meters above sea level.
What is the largest animal? | Which animal is the biggest? | What is the biggest animal in the world? || The blue whale is the largest animal that has ever lived.
Why do we need sleep? | Why is sleep important? | Why do people sleep? || Sleep lets the body and brain rest and recover. It helps memory, learning, mood and the immune system.
Why do leaves change color in autumn? | Why do leaves turn yellow in fall? || In autumn, trees stop making green chlorophyll, so the yellow and orange colors in the leaves become visible.
How do airplanes fly? | How does a plane stay in the air? || An airplane flies because air flowing over its wings creates lift, while its engines push it forward.
How does the internet work? | How do computers talk over the internet? || The internet works by splitting data into small packets that travel between computers through routers, following shared protocols such as TCP/IP.
How do I learn Python? | How can I learn Python? | What is the best way to learn Python? || Start with a beginner tutorial, write small programs every day and build simple projects. Practice is the fastest way to learn Python.
How do I learn programming? | How can I learn to code? | How do I start coding? || Pick one beginner-friendly language such as Python, follow a tutorial, and write small programs every day. Building projects teaches the most.
How does a neural network learn? | How are neural networks trained? || A neural network learns by comparing its output with the correct answer, computing the error with a loss function and adjusting its weights with gradient descent.
What is the difference between AI and machine learning? | How is machine learning different from AI? || AI is the broad field of making machines act intelligently. Machine learning is one part of AI in which computers learn from data.
What is the difference between deep learning and machine learning? | How is deep learning different from machine learning? || Deep learning is a kind of machine learning that uses neural networks with many layers. It usually needs more data but learns features by itself.
How do I make coffee? | How can I make a cup of coffee? | How do you make coffee? || Put ground coffee in a filter or a press, pour hot water over it, wait a few minutes and then pour the coffee into a cup.
How do I make tea? | How do you make tea? | How can I make a cup of tea? || Pour hot water over a tea bag or tea leaves, let it steep for a few minutes, then remove the leaves and enjoy.
How do I stay healthy? | How can I stay healthy? | Any tips for staying healthy? || Eat plenty of vegetables and fruit, exercise regularly, sleep seven to nine hours, drink water and keep in touch with friends.
How do I sleep better? | How can I sleep better? | Any tips for better sleep? || Go to bed at the same time every day, avoid screens and caffeine in the evening, and keep your bedroom dark, quiet and cool.
How do I ride a bicycle? | How do you ride a bike? | How can I learn to ride a bike? || Sit on the saddle, push one pedal down to start, look ahead and keep pedaling while you steer. Practice balance on a quiet, flat path first.
What time is it? | What is the time now? | What day is it today? || I cannot see a clock or calendar, so I do not know the current date or time.
What is the weather like today? | Will it rain tomorrow? | What is the weather forecast? || I cannot access live data, so I do not know today's weather. Please check a weather service.
What is the meaning of life? | What is the purpose of life? || People answer this question differently. Many find meaning in relationships, learning, helping others and doing work they care about.
Tell me a joke. | Do you know a joke? | Say something funny. || Why do programmers prefer dark mode? Because light attracts bugs.
Tell me a fun fact. | Do you know a fun fact? | Tell me something interesting. || Honey never spoils. Jars of honey thousands of years old have been found in Egyptian tombs, and they were still edible.
What is your favorite color? | Do you have a favorite color? || I am a language model, so I do not have favorite things, but many people like blue.
Can you speak other languages? | Do you speak French? | Do you speak German? || I only understand simple English. For other languages, please configure a larger model.
"""

SMALL_TALK = """
Hello | Hi | Hey | Hello! | Hi! | Hi there | Hello there | Hey there! | Good morning | Good afternoon | Good evening | Greetings || Hello! I am the default model of this server. Ask me a short question, for example: What is deep learning?
Who are you? | What are you? | Who am I talking to? | Introduce yourself. | Tell me about yourself. | What is your name? | What's your name? || I am a small default language model that ships with this server. I give short answers about everyday and technical topics.
What can you do? | How can you help me? | What do you know? | What can I ask you? | Help | Can you help me? || I can give short answers about many everyday and technical topics, such as deep learning, Python, the sun or coffee. For better answers, configure a larger model.
Are you a large language model? | Are you ChatGPT? | Are you an AI? | Are you a robot? | Are you human? || I am a very small AI language model built into this server. I am not a large model, so my knowledge is limited.
How are you? | How are you doing? | How's it going? | How do you do? | Are you okay? || I am doing well, thank you! How can I help you?
Thanks | Thanks! | Thank you | Thank you! | Thank you very much. | Thanks a lot! | Great, thanks. | That was helpful, thanks! || You're welcome! Let me know if you have another question.
Bye | Goodbye | Bye! | See you later. | Good night | That's all for now. || Goodbye! Have a nice day.
OK | Okay | Cool | Nice | I see. | Got it. | Great! | Interesting. || Glad to help. Feel free to ask another question.
How big are you? | How many parameters do you have? | Who made you? | Who trained you? | Where do you come from? || I am a tiny language model with a few million parameters, trained by the developers of this server on a small set of questions and answers.
"""

FALLBACK = (
    "I'm sorry, I don't know about that. I am a small built-in model with limited knowledge, "
    "so please configure a larger model for better answers."
)

TASK_REPLY = (
    "I am a small built-in model and can only give short answers about common topics. "
    "Please configure a larger model for tasks like this."
)

TASK_PROMPTS = [
    "Write a poem about {t}.",
    "Write a story about {t}.",
    "Write an essay about {t}.",
    "Translate this sentence into French: I like {t}.",
    "Summarize this article about {t}.",
    "Write a Python program that sorts a list.",
    "Write a function in JavaScript that adds two numbers.",
    "Solve this equation: 3x + 7 = 22.",
    "Compose a song about {t}.",
    "Write a long report on {t}.",
    "Plan a trip to {t} for me.",
    "Write an email to my boss about {t}.",
    "Can you write code?",
    "Can you write a poem?",
    "Can you translate text for me?",
    "Can you do my homework?",
    "Can you search the internet?",
    "Can you write a program for me?",
]

SINGULAR_TEMPLATES = [
    "What is {t}?",
    "What is {t}",
    "What's {t}?",
    "Tell me about {t}.",
    "Explain {t}.",
    "Can you describe {t}?",
    "What do you know about {t}?",
    "Define {t}.",
    "Could you explain {t}?",
    "Give me a short explanation of {t}.",
    "I'd like to know about {t}.",
    "Describe {t}.",
    "{T}?",
    "Do you know what {t} is?",
    "Please tell me about {t}.",
    "Tell me something about {t}.",
    "Explain {t} in simple words.",
    "What is meant by {t}?",
    "Can you explain what {t} is?",
    "Give me some information about {t}.",
    "Explain {t} to me.",
    "Briefly, what is {t}?",
    "Quick question: what is {t}?",
    "I have a question about {t}.",
    "What can you tell me about {t}?",
    "How would you describe {t}?",
    "How does {t} work?",
    "Tell me about {t}, please.",
    "{T}: what is it?",
    "{T}, what's that?",
    "I wonder what {t} is.",
    "I am interested in {t}.",
    "Can you give me an explanation of {t}?",
    "Talk about {t}.",
    "Share some facts about {t}.",
    "What should I know about {t}?",
    "Do you know anything about {t}?",
    "Help me understand {t}.",
    "Need info on {t}.",
    "Let's talk about {t}.",
    "Any facts about {t}?",
    "{T}. Explain.",
]

PLURAL_TEMPLATES = [
    "What are {t}?",
    "What are {t}",
    "Tell me about {t}.",
    "Explain {t}.",
    "Can you describe {t}?",
    "What do you know about {t}?",
    "Define {t}.",
    "Could you explain {t}?",
    "Give me a short explanation of {t}.",
    "I'd like to know about {t}.",
    "Describe {t}.",
    "{T}?",
    "Do you know what {t} are?",
    "Please tell me about {t}.",
    "Tell me something about {t}.",
    "Explain {t} in simple words.",
    "Can you explain what {t} are?",
    "Give me some information about {t}.",
    "Explain {t} to me.",
    "Briefly, what are {t}?",
    "Quick question: what are {t}?",
    "I have a question about {t}.",
    "What can you tell me about {t}?",
    "How would you describe {t}?",
    "How do {t} work?",
    "Tell me about {t}, please.",
    "{T}: what are they?",
    "{T}, what are those?",
    "I wonder what {t} are.",
    "I am interested in {t}.",
    "Can you give me an explanation of {t}?",
    "Talk about {t}.",
    "Share some facts about {t}.",
    "What should I know about {t}?",
    "Do you know anything about {t}?",
    "Help me understand {t}.",
    "Need info on {t}.",
    "Let's talk about {t}.",
    "Any facts about {t}?",
    "{T}. Explain.",
]

PERSON_TEMPLATES = [
    "Who was {t}?",
    "Who is {t}?",
    "Who was {t}",
    "Tell me about {t}.",
    "What do you know about {t}?",
    "Can you describe {t}?",
    "Do you know who {t} was?",
    "Please tell me about {t}.",
    "Tell me something about {t}.",
    "Give me some information about {t}.",
    "{T}?",
    "What is {t} known for?",
    "What is {t} famous for?",
    "What can you tell me about {t}?",
    "I have a question about {t}.",
    "I am interested in {t}.",
    "Share some facts about {t}.",
    "Do you know anything about {t}?",
    "Let's talk about {t}.",
    "Need info on {t}.",
    "What should I know about {t}?",
]

# Optional words around a question, so that the model learns to look for the topic.
QUESTION_PREFIXES = [
    "Hi, ", "Hey, ", "Hello! ", "Hi! ", "Hey there, ", "Good morning! ", "Hello, ",
    "Quick question: ", "Sorry, ", "Question: ", "Please, ", "Okay, ", "One more thing: ",
]
QUESTION_SUFFIXES = [" Thanks!", " Please.", " Keep it short.", " Be brief.", " In simple terms.", " Thank you."]

# Real things the model was deliberately not taught; it should answer them with FALLBACK.
UNKNOWN_TERMS = """
a neutron star; dark energy; a supernova; a nebula; a pulsar; a meteor; the aurora borealis; Neptune; Pluto;
the Andromeda galaxy; mitochondria; a ribosome; an enzyme; hemoglobin; the kidney; the pancreas; asthma; a migraine;
a stethoscope; an MRI scan; titanium; copper; silver; aluminum; concrete; a skyscraper; a tunnel; a canal;
a submarine; a helicopter; a motorcycle; a tractor; a drone; a 3D printer; a laser; a transistor; a semiconductor;
fiber optics; 5G; radar; sonar; a hologram; Fortran; COBOL; Perl; Ruby; PHP; TypeScript; Scala; MATLAB; TensorFlow;
NumPy; React; Django; Flask; Redis; MongoDB; PostgreSQL; GraphQL; WebAssembly; a hash table; a linked list;
a binary tree; Big O notation; a mutex; a deadlock; phishing; ransomware; a VPN; DNS; an IP address; a router;
a modem; a keyboard; a printer; a scanner; a tablet; a smartwatch; a podcast; a blog; a meme; an emoji; pilates;
karate; judo; golf; rugby; baseball; hockey; skiing; surfing; a croissant; a burrito; tofu; quinoa; kimchi; hummus;
a mango; a pineapple; an avocado; cinnamon; saffron; paprika; lemonade; a smoothie; a cello; a harp; a trumpet;
a saxophone; a zebra; a giraffe; a rhinoceros; a hippopotamus; a camel; a sloth; an octopus; a jellyfish; a crab;
a lobster; a parrot; a flamingo; a hedgehog; a squirrel; a wolf; a fox; a deer; a rabbit; a mosquito; a ladybug;
a cactus; a tulip; a rose; moss; algae; coral; a geyser; a canyon; a waterfall; an iceberg; a swamp; a savanna;
a tsunami; an avalanche; a monsoon; fog; hail; origami; knitting; pottery; sculpture; ballet; opera; jazz;
hip hop; baroque music; feudalism; the Renaissance; the Ottoman Empire; the Roman Empire; the Cold War; Esperanto;
Zoroastrianism; a sextant; a harpsichord; a fjord; Norway; Peru; Kenya; Mongolia; Lisbon; Cairo; Buenos Aires;
Madrid; Vienna; Seoul; Mexico; Egypt; Sweden; Greece; Turkey; Iceland; a sonnet; a haiku; a limerick; a crossword;
sudoku; poker; a kite; a trampoline; a lawnmower; a vacuum cleaner; a dishwasher; a toaster; a kettle; a blender
"""

UNKNOWN_PEOPLE = """
Napoleon; Cleopatra; Confucius; Gandhi; Picasso; Frida Kahlo; Nikola Tesla; Steve Jobs; Bill Gates; Julius Caesar;
Aristotle; Socrates; Van Gogh; Johann Sebastian Bach; Jane Austen; Mark Twain; Abraham Lincoln; Queen Victoria;
Genghis Khan; Marco Polo; Christopher Columbus; Stephen Hawking; Grace Hopper; Dennis Ritchie; Tim Berners-Lee
"""

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a helpful assistant. Answer briefly.",
    "You are a friendly and concise assistant.",
    "You are a helpful AI assistant that gives short, correct answers.",
    "Answer the user's questions.",
]

# How a question is written without the chat template, and what comes between it and the answer,
# with their weights: a plain question dominates, as on /generate and /v1/completions.
RAW_FORMATS = [
    ("{q}", " ", 30),
    ("{q}", "\n", 25),
    ("{q}", "\n\n", 15),
    ("Question: {q}\nAnswer:", " ", 15),
    ("Q: {q}\nA:", " ", 15),
]

CONSONANTS = "bcdfghjklmnprstvwxzq"
VOWELS = "aeiouy"


@dataclass(frozen=True)
class Topic:
    """A subject with the names used to ask about it and its fixed answer."""

    names: tuple[tuple[str, bool], ...]
    answer: str
    person: bool


def _parse_topics(block: str, person: bool) -> list[Topic]:
    """Parse "name; alias* | answer" lines into topics."""
    topics = []
    for line in block.strip().splitlines():
        names, answer = (part.strip() for part in line.split(" | ", 1))
        parsed = tuple((n.strip().rstrip("*"), n.strip().endswith("*")) for n in names.split(";"))
        topics.append(Topic(names=parsed, answer=answer, person=person))
    return topics


def _parse_alternatives(block: str) -> list[tuple[list[str], str]]:
    """Parse "prompt | prompt || answer" lines into (prompts, answer) pairs."""
    pairs = []
    for line in block.strip().splitlines():
        prompts, answer = line.split(" || ", 1)
        pairs.append(([p.strip() for p in prompts.split(" | ")], answer.strip()))
    return pairs


def _fill(template: str, name: str) -> str:
    """Insert a topic name into a question template, capitalizing it at the start."""
    return template.format(t=name, T=name[:1].upper() + name[1:])


def _decorate(question: str, rng: random.Random) -> str:
    """Sometimes put a greeting or filler in front of a question and a polite word after it."""
    if rng.random() < 0.2:
        prefix = rng.choice(QUESTION_PREFIXES)
        question = prefix + (question[:1].lower() + question[1:] if prefix.endswith(", ") else question)
    if rng.random() < 0.15:
        question += rng.choice(QUESTION_SUFFIXES)
    return question


def _chat(user: str, answer: str) -> list[dict[str, str]]:
    """Build a one-turn user/assistant exchange."""
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def topic_exchanges(topics: list[Topic], rng: random.Random, per_name: int) -> list[list[dict[str, str]]]:
    """Ask about every topic name with a random subset of question phrasings."""
    out = []
    for topic in topics:
        for name, plural in topic.names:
            if topic.person:
                templates = PERSON_TEMPLATES
            else:
                templates = PLURAL_TEMPLATES if plural else SINGULAR_TEMPLATES
            for template in rng.sample(templates, min(per_name, len(templates))):
                out.append(_chat(_decorate(_fill(template, name), rng), topic.answer))
            question = _fill(rng.choice(templates), name)
            out.append(_chat(rng.choice([question.lower(), question.lower().rstrip("?.")]), topic.answer))
    return out


def alternative_exchanges(pairs: list[tuple[list[str], str]], repeats: int) -> list[list[dict[str, str]]]:
    """Turn every prompt of every (prompts, answer) pair into exchanges, with lowercase copies."""
    out = []
    for prompts, answer in pairs:
        for prompt in prompts:
            for _ in range(repeats):
                out.append(_chat(prompt, answer))
            out.append(_chat(prompt.lower(), answer))
    return out


def _nonsense_word(rng: random.Random) -> str:
    """Make a made-up word from random syllables, sometimes with an article or a capital."""
    word = "".join(
        rng.choice(CONSONANTS) + rng.choice(VOWELS) + rng.choice(["", "", rng.choice(CONSONANTS)])
        for _ in range(rng.randint(2, 4))
    )
    return rng.choice([word, "a " + word, word.capitalize(), "the " + word])


def _split_terms(block: str) -> list[str]:
    """Split a semicolon-separated block into terms."""
    return [term.strip() for term in block.replace("\n", " ").split(";") if term.strip()]


def fallback_exchanges(topics: list[Topic], rng: random.Random, nonsense: int) -> list[list[dict[str, str]]]:
    """Questions about untaught or made-up things and out-of-scope tasks, answered with fixed replies."""
    known = {name.lower() for topic in topics for name, _ in topic.names}
    unknown = [(term, SINGULAR_TEMPLATES) for term in _split_terms(UNKNOWN_TERMS)]
    unknown += [(person, PERSON_TEMPLATES) for person in _split_terms(UNKNOWN_PEOPLE)]
    if overlap := known & {term.lower() for term, _ in unknown}:
        raise ValueError(f"unknown terms that are also topics: {sorted(overlap)}")
    out = [
        _chat(_decorate(_fill(t, term), rng), FALLBACK) for term, templates in unknown for t in rng.sample(templates, 3)
    ]
    for _ in range(nonsense):
        word = _nonsense_word(rng)
        if word.lower() not in known:
            out.append(_chat(_decorate(_fill(rng.choice(SINGULAR_TEMPLATES), word), rng), FALLBACK))
    subjects = [name for topic in topics if not topic.person for name, _ in topic.names]
    for _ in range(len(out) // 4):
        out.append(_chat(rng.choice(TASK_PROMPTS).format(t=rng.choice(subjects)), TASK_REPLY))
    return out


def multi_turn(pool: list[list[dict[str, str]]], rng: random.Random, count: int) -> list[list[dict[str, str]]]:
    """Join two or three random single-turn exchanges into one conversation."""
    return [[m for exchange in rng.sample(pool, rng.randint(2, 3)) for m in exchange] for _ in range(count)]


def raw_exchanges(pool: list[list[dict[str, str]]], rng: random.Random, share: float) -> list[dict[str, str]]:
    """Write a share of the single-turn exchanges as plain text: a prompt and the completion that answers it."""
    formats = [(prompt, separator) for prompt, separator, _ in RAW_FORMATS]
    weights = [weight for _, _, weight in RAW_FORMATS]
    out = []
    for user, assistant in rng.sample(pool, int(len(pool) * share)):
        prompt, separator = rng.choices(formats, weights)[0]
        out.append({"prompt": prompt.format(q=user["content"]), "completion": separator + assistant["content"]})
    return out


def build_corpus(seed: int) -> list[dict]:
    """Build the whole shuffled corpus deterministically from the seed: chat records and plain-text records."""
    rng = random.Random(seed)
    topics = _parse_topics(TOPICS, person=False) + _parse_topics(PEOPLE, person=True)
    direct = _parse_alternatives(DIRECT)
    small_talk = _parse_alternatives(SMALL_TALK)
    single = (
        topic_exchanges(topics, rng, per_name=15)
        + alternative_exchanges(direct, repeats=4)
        + alternative_exchanges(small_talk, repeats=4)
        + fallback_exchanges(topics, rng, nonsense=350)
    )
    conversations = single + multi_turn(single, rng, count=len(single) // 10)
    rng.shuffle(conversations)
    corpus: list[dict] = []
    for messages in conversations:
        if rng.random() < 0.15:
            messages = [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}] + messages
        corpus.append({"messages": messages})
    corpus += raw_exchanges(single, rng, share=0.35)
    rng.shuffle(corpus)
    return corpus


def main() -> None:
    """Write the corpus as JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    corpus = build_corpus(args.seed)
    with args.output.open("w", encoding="utf-8") as f:
        for record in corpus:
            f.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    topics = len(_parse_topics(TOPICS, False)) + len(_parse_topics(PEOPLE, True))
    raw = sum("prompt" in record for record in corpus)
    print(f"wrote {len(corpus) - raw} conversations and {raw} plain-text questions about {topics} topics to {args.output}")


if __name__ == "__main__":
    main()
